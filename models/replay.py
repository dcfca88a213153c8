"""Offline replay: recorded telemetry through the same engine as the stream.

Records are the replay format of docs/contracts.md: one dict per event in time order,
each with ``kind`` (``toolcall``, ``grant`` or ``task``) plus that contract's
fields; a grant may be its plain unsigned payload. Time is event time: before
each event the engine's clock is advanced to it, so grace periods, expiry and
quiet periods behave as they did live.

>>> from intentwatch.models.engine import Engine
>>> from intentwatch.simulation.fleet import FleetSpec, generate
>>> fleet = generate(FleetSpec(seed=1, agents_per_role=1, history_days=0.2))
>>> outcomes = list(replay(fleet, Engine()))
>>> sum(len(o.verdicts) for o in outcomes) > 0
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from intentwatch.contracts import Event, Grant, decode_replay_record
from intentwatch.models.engine import Engine, Outcome

__all__ = ["ReplaySummary", "event_time", "replay"]


def event_time(event: Event) -> float:
    """When an event happened: a grant counts from its issue time."""
    return event.issued_at if isinstance(event, Grant) else event.ts


def replay(records: Iterable[dict[str, Any] | Event], engine: Engine) -> Iterator[Outcome]:
    """Yield the engine's outcome for each record, then one for the end of the recording.

    Raises :class:`~intentwatch.contracts.ContractError` on a record that breaks its
    contract (the stream sends those to the dead-letter topic instead).
    """
    last = None
    for record in records:
        event = decode_replay_record(record) if isinstance(record, dict) else record
        now = event_time(event)
        last = now if last is None else max(last, now)
        outcome = engine.tick(last)
        outcome.extend(engine.process(event, now=last))
        yield outcome
    if last is not None:
        yield engine.tick(last + engine.config.grace_seconds)


@dataclass
class ReplaySummary:
    """Counts over a replay's outcomes: decisions, revocations by reason, audits."""

    decisions: Counter[str] = field(default_factory=Counter)
    revocations: Counter[str] = field(default_factory=Counter)
    audits: int = 0

    @property
    def calls(self) -> int:
        return sum(self.decisions.values())

    def add(self, outcome: Outcome) -> None:
        self.decisions.update(verdict.decision for verdict in outcome.verdicts)
        self.revocations.update(revocation.reason_code for revocation in outcome.revocations)
        self.audits += len(outcome.audits)
