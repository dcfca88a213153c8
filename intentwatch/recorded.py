"""Recorded telemetry files (JSON Lines in the replay format), read line by line.

A line that is not JSON, not an object, or breaks its contract is *rejected* with
``file:line: reason`` instead of ending the read, as the worker dead-letters a bad
record and goes on; blank lines are skipped.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
>>> _ = path.write_text('{"kind": "task", "event_id": "e1", "ts": 0, "task_id": "t1",'
...     ' "agent_id": "spiffe://acme.org/a1", "status": "started"}\\n{"kind": "task", "ts": \\n')
>>> rejected = []
>>> [event.status for event in read_events(path, rejected.append)]
['started']
>>> rejected[0].where.endswith("events.jsonl:2"), rejected[0].reason
(True, 'not JSON: Expecting value at character 24')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from intentwatch.contracts import ContractError, Event, decode_replay_record

__all__ = ["RejectedLine", "read_events"]


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line of a recorded file that is not a valid event."""

    path: Path
    line: int
    reason: str

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_events(path: Path, rejected: Callable[[RejectedLine], None]) -> Iterator[Event]:
    """The events of the file at ``path`` in order; ``rejected`` is called for each bad line."""
    with Path(path).open(encoding="utf-8", errors="replace") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                why = f"not JSON: {error.msg} at character {error.pos + 1}"
                rejected(RejectedLine(path, number, why))
                continue
            if not isinstance(data, dict):
                rejected(RejectedLine(path, number, "not a JSON object"))
                continue
            try:
                yield decode_replay_record(data)
            except ContractError as error:
                rejected(RejectedLine(path, number, str(error)))
