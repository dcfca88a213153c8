"""An engine rebuilt from its tables, as after a crash, decides what the uninterrupted one did.

What a worker keeps between records is in its tables, as the worker's codecs store it
(msgpack of typed values): grants, open tasks (their detector state included),
tombstones, what was learned of each agent, and the partition's population and roles.
Restarting from them every few records, and reading the last few records again (what
was read since the last offset commit), must give the same verdicts, revocations and
audits as never restarting: the same bytes, scores included. (The real worker, broker
and SIGKILL: ``tests/test_integration_crash.py``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from intentwatch.contracts import Event, Grant, decode_replay_record
from intentwatch.models.detection import Detector
from intentwatch.models.engine import Engine, Outcome, TaskState, Tombstone
from intentwatch.models.replay import event_time
from intentwatch.simulation.fleet import FleetSpec, generate

SPEC = FleetSpec(seed=4, agents_per_role=1, history_days=1.0, attack_days=1.0, attack_rate=0.3)
"""The pinned replay fixture's fleet (``tests/test_replay_digest.py``)."""
_TYPES: dict[str, Any] = {"grants": dict[str, Grant], "open": TaskState, "ended": Tombstone,
                          "forgotten": float}


def _stored(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The tables as a restarted worker reads them back."""
    kept: dict[str, dict[str, Any]] = {"learned": dict(tables["learned"])}
    for name, value_type in _TYPES.items():
        decoder = msgspec.msgpack.Decoder(value_type)
        kept[name] = {key: decoder.decode(msgspec.msgpack.encode(value))
                      for key, value in tables[name].items()}
    return kept


def _restarted(engine: Engine, tables: dict[str, dict[str, Any]]) -> Engine:
    """A new engine and detector from what ``engine`` left in its tables (the population
    and its roles as the worker writes them for a partition)."""
    old = engine.detector
    detector = Detector(engine.config)
    for role in detector.load_population_state(old.population_state()):
        detector.load_role_state(old.role_state(role))
    again = Engine(engine.config, grants=tables["grants"], open=tables["open"],
                   ended=tables["ended"], forgotten=tables["forgotten"],
                   learned=tables["learned"], detector=detector)
    again.restore()
    again.last_sweep = engine.last_sweep
    return again


def _outputs(events: list[Event], restart_every: int = 0, read_again: int = 3) -> Iterator[bytes]:
    """Every output, as published, of reading ``events`` as the stream does; every
    ``restart_every`` events a restart from the tables, the last ``read_again`` read again."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in (*_TYPES, "learned")}
    engine = Engine(grants=tables["grants"], open=tables["open"], ended=tables["ended"],
                    forgotten=tables["forgotten"], learned=tables["learned"])
    clock: list[float] = []  # stream time after each event
    i = 0
    restarts = set(range(restart_every, len(events), restart_every)) if restart_every else set()
    while i < len(events):
        if i in restarts:
            restarts.discard(i)
            tables = _stored(tables)
            engine = _restarted(engine, tables)
            i = max(0, i - read_again)
            del clock[i:]
        now = max(event_time(events[i]), clock[-1] if clock else float("-inf"))
        clock.append(now)
        outcome = engine.tick(now)
        outcome.extend(engine.process(events[i], now=now))
        yield from _published(outcome)
        i += 1
    yield from _published(engine.tick(clock[-1] + engine.config.grace_seconds))


def _published(outcome: Outcome) -> Iterator[bytes]:
    for item in (*outcome.verdicts, *outcome.revocations, *outcome.audits):
        yield msgspec.json.encode(item)


@pytest.mark.parametrize("every", [13, 97])
def test_an_engine_restarted_from_its_tables_decides_what_the_uninterrupted_one_did(
    every: int,
) -> None:
    events = [decode_replay_record(record) for record in generate(SPEC)]
    first = list(_outputs(events))
    assert len(set(first)) == len(first) > 300
    crashed = list(_outputs(events, restart_every=every))
    assert len(crashed) > len(first)  # what was read again was said again,
    assert list(dict.fromkeys(crashed)) == first  # exactly as the first time, in its order
