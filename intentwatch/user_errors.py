"""The CLI's one error handler: an ordinary mistake is one line and exit code 2.

A mistake (a missing file, a keyring that exists already, a bad ``INTENTWATCH_*``
value, a malformed record, Kafka not answering) prints ``intentwatch: <what>`` naming
the file, line, variable or value, on stderr, and exits 2 instead of a traceback.
Anything else is a bug and keeps its traceback.

>>> describe(FileNotFoundError(2, "No such file or directory", "events.jsonl"))
'events.jsonl: No such file or directory'
>>> describe(UserError("name a call or a task"))
'name a call or a task'
>>> describe(KeyError("x")) is None
True
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["EXIT_MISTAKE", "Commands", "UserError", "describe"]

EXIT_MISTAKE = 2
"""The exit code of a user mistake (as for a bad option)."""


class UserError(Exception):
    """A mistake of the user's; the message says what and, where it helps, the fix."""


def describe(error: BaseException) -> str | None:
    """The one line that explains ``error`` to a user, or ``None`` if it is a bug."""
    from kafka.errors import KafkaError

    from intentwatch.contracts import ContractError
    from intentwatch.local.kafka_broker import KafkaSetupError
    from intentwatch.pipeline.settings import SettingsError
    from intentwatch.sdk.errors import IntentwatchError

    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, FileExistsError | FileNotFoundError):
        return str(error)
    if isinstance(error, KafkaError):
        return (f"Kafka did not answer ({type(error).__name__}): is a broker running? "
                "`intentwatch kafka up` starts one; --bootstrap or INTENTWATCH_BOOTSTRAP "
                "names another")
    if isinstance(error, ModuleNotFoundError) and error.name:
        return (f"this command needs {error.name}, which is not installed: "
                "pip install 'intentwatch[worker]'")
    known = UserError | ContractError | IntentwatchError | KafkaSetupError | SettingsError
    return str(error) if isinstance(error, known) else None


class Commands(TyperGroup):
    """A command group whose commands' user mistakes end in one line and exit 2."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer's own click)
        try:
            return super().invoke(ctx)
        except Exception as error:
            line = describe(error)
            if line is None:
                raise
            typer.echo(f"intentwatch: {line}", err=True)
            raise typer.Exit(EXIT_MISTAKE) from None
