"""The SDK's one error type for Kafka trouble, with a hint that says what to do.

>>> error = KafkaUnavailable("127.0.0.1:9", "no answer within 5 s")
>>> isinstance(error, IntentwatchError), error.hint.startswith("is a broker running")
(True, True)
>>> print(bad_address(ValueError("port '9092x' is not a number")).hint)
set INTENTWATCH_BOOTSTRAP (or pass bootstrap) to host:port[,host:port]
"""

from __future__ import annotations

__all__ = ["IntentwatchError", "KafkaUnavailable", "PublishError", "bad_address", "missing_topic"]


class IntentwatchError(RuntimeError):
    """Kafka cannot do what the SDK needs; ``hint`` says what to do about it."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(f"{problem}: {hint}")
        self.problem = problem
        self.hint = hint


class PublishError(IntentwatchError):
    """Records were not (or could not be) delivered to Kafka."""


class KafkaUnavailable(PublishError):
    """Kafka did not answer in time."""

    def __init__(self, bootstrap: str, what: str) -> None:
        super().__init__(
            f"Kafka at {bootstrap}: {what}",
            "is a broker running there? `intentwatch kafka up` starts a local one; "
            "INTENTWATCH_BOOTSTRAP (or the bootstrap argument) names another",
        )


def bad_address(error: ValueError) -> IntentwatchError:
    """The error for bootstrap servers that are not ``host:port[,host:port]``."""
    return IntentwatchError(
        str(error), "set INTENTWATCH_BOOTSTRAP (or pass bootstrap) to host:port[,host:port]"
    )


def missing_topic(topic: str, bootstrap: str) -> IntentwatchError:
    """The error for a topic that does not exist (topics are never created on first use)."""
    return IntentwatchError(
        f"topic {topic} does not exist on Kafka at {bootstrap}",
        "run `intentwatch topics create` (with the workers' INTENTWATCH_PARTITIONS) first",
    )
