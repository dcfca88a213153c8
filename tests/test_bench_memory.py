"""bench.memory loads distinct agents, each a copy of a learned one under its own id."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bench.memory import child, learned_agents
from intentwatch.simulation.fleet import FleetSpec


def test_each_loaded_agent_is_a_distinct_copy_of_a_learned_one(tmp_path: Path) -> None:
    states = learned_agents(FleetSpec(seed=1, agents_per_role=1, history_days=0.5,
                                      attack_days=0.0, attack_rate=0.0))
    assert states and all(states)
    path = tmp_path / "states.msgpack"
    path.write_bytes(msgspec.msgpack.encode(states))
    run = child(path, 2 * len(states) + 1)
    assert run["held"] == run["agents"] == 2 * len(states) + 1
    assert run["record_bytes"] >= sum(len(state) for state in states) * 2
    assert run["rss_after"] > 0 and run["rss_per_agent"] == (
        (run["rss_after"] - run["rss_before"]) / run["agents"])
