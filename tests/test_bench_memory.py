"""bench.memory meets distinct agents, each a copy of a learned one under its own id, their
records in a RocksDB table, holding at most the bound."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bench.memory import child, learned_agents, residue
from intentwatch.simulation.fleet import FleetSpec


def test_each_agent_met_is_a_distinct_copy_and_at_most_the_bound_is_held(tmp_path: Path) -> None:
    states = learned_agents(FleetSpec(seed=1, agents_per_role=1, history_days=0.5,
                                      attack_days=0.0, attack_rate=0.0))
    assert states and all(states)
    path = tmp_path / "states.msgpack"
    path.write_bytes(msgspec.msgpack.encode(states))
    agents = 2 * len(states) + 1
    run = child(path, agents, 0)
    assert run["held"] == run["agents"] == agents and run["evicted"] == 0
    assert run["record_bytes"] >= sum(len(state) for state in states) * 2
    assert run["table_bytes_on_disk"] > 0
    assert run["rss_after"] > 0 and run["rss_per_agent"] == (
        (run["rss_after"] - run["rss_before"]) / run["agents"])
    bounded = child(path, agents, 3)
    assert (bounded["held"], bounded["evicted"]) == (3, agents - 3)
    left = residue(path, agents, 3)
    assert left["evicted"] == agents - 3
