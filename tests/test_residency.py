"""Resident agents are bounded (issue 12 point 5; ``limits.resident_agents``): an engine
holds what was learned of its least recently met agents only, and an evicted agent read
back from ``learned`` is exactly what was evicted, so a tiny bound decides as no bound."""

from __future__ import annotations

import gc
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from intentwatch.models.config import ScoringConfig, load_config
from intentwatch.models.detection import Detector
from intentwatch.models.engine import Engine
from intentwatch.models.replay import replay
from intentwatch.simulation.fleet import FleetSpec, generate
from tests.test_engine import call, grant, task_event

FLEET = FleetSpec(seed=5, agents_per_role=2, history_days=1.5, attack_days=1.0,
                  attack_rate=0.3)


def bounded(resident_agents: int | None) -> ScoringConfig:
    config = load_config()
    if resident_agents is None:
        return config
    return replace(config, limits={**config.limits, "resident_agents": resident_agents})


class WatchedEngine(Engine):
    """Notes, for each eviction, whether the evicted agent had an open task being scored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mid_task = 0

    def _evict_agent(self) -> None:
        agent_id = next(iter(self.met))
        self.mid_task += any(task.scoring is not None for key, task in self._tasks.items()
                             if key[0] == agent_id and not task.is_over)
        super()._evict_agent()


def outputs(engine: Engine) -> list[bytes]:
    return [msgspec.json.encode(item) for outcome in replay(generate(FLEET), engine)
            for item in (*outcome.verdicts, *outcome.revocations, *outcome.audits)]


def test_a_bound_of_two_agents_gives_the_outputs_and_learning_of_an_unbounded_engine() -> None:
    unbounded = Engine(bounded(None))
    tiny = WatchedEngine(bounded(2))
    expected, got = outputs(unbounded), outputs(tiny)
    assert len(unbounded.met) == 6 * FLEET.agents_per_role and len(tiny.met) == 2
    evictions = tiny.shed["agent", "evicted"]
    assert evictions > 100 and tiny.mid_task > 0  # evicted mid-task too, and reloaded
    decisions = {msgspec.json.decode(line).get("decision") for line in expected}
    assert {"allow", "alert", "revoke"} <= decisions
    assert got == expected  # every verdict (score, decision, reasons), revocation and audit
    assert tiny.detector.state(tiny.learned) == unbounded.detector.state(unbounded.learned)


def learn_task(engine: Engine, agent: str, task: str, ts: float) -> None:
    engine.process(grant(task=task, agent=agent, issued_at=ts, expires_at=ts + 900))
    engine.process(call(ts=ts + 1, task=task, agent=agent,
                        target="https://crm.acme.org/c/7"))
    engine.process(task_event("completed", ts=ts + 2, task=task, agent=agent))


AGENTS = [f"spiffe://acme.org/agents/support/a{n}" for n in range(4)]


def test_the_agent_met_least_recently_is_evicted_and_read_back_when_met_again() -> None:
    engine = Engine(bounded(2))
    a, b, c, _ = AGENTS
    learn_task(engine, a, "t1", 100.0)
    learn_task(engine, b, "t2", 200.0)
    learn_task(engine, a, "t3", 300.0)  # a is met more recently than b now
    learn_task(engine, c, "t4", 400.0)
    assert list(engine.met) == [a, c] and engine.shed["agent", "evicted"] == 1
    assert engine.detector.learned_agents() == {a, c}
    kept = engine.learned[b]
    engine.process(grant(task="t5", agent=b, issued_at=500.0, expires_at=1400.0))
    engine.process(call(ts=501.0, task="t5", agent=b))
    assert list(engine.met) == [c, b] and engine.met[b]  # b read back from learned
    assert engine.detector.agent_state(b) == kept


def test_an_evicted_agent_that_learned_since_it_was_written_is_written_first() -> None:
    engine = Engine(bounded(1))
    a, b, _, _ = AGENTS
    for agent, task, ts in ((a, "t1", 100.0), (b, "t2", 110.0)):
        engine.process(grant(task=task, agent=agent, issued_at=ts, expires_at=ts + 9000))
        engine.process(call(ts=ts + 1, task=task, agent=agent))
    assert a not in engine.learned  # nothing learned of it yet
    # both tasks go quiet and are learned in one sweep: a, learned first, is evicted for b
    # before the sweep's write-back, so its state is written when it is evicted
    quiet = engine.config.quiet_period_seconds
    engine.tick(111.0 + quiet + 1)
    assert list(engine.met) == [b]
    twin = Detector(engine.config)
    twin.load_agent_state(engine.learned[a])
    assert twin.history(a, engine.detector.baseline.task(a).role)["history_agent_calls"] > 0


def references(root: object, wanted: str) -> int:
    """How many objects reachable from ``root`` are the string ``wanted``."""
    seen, stack, found = {id(root)}, [root], 0
    while stack:
        for child in gc.get_referents(stack.pop()):
            if isinstance(child, str):
                found += child == wanted
            elif id(child) not in seen and not isinstance(child, (type, type(gc))):
                seen.add(id(child))
                stack.append(child)
    return found


def test_an_evicted_agent_leaves_nothing_of_it_in_the_detector() -> None:
    engine = Engine(bounded(2))
    for n, agent in enumerate(AGENTS):
        learn_task(engine, agent, f"t{n}", 100.0 * (n + 1))
    detector = engine.detector
    first = AGENTS[0]
    assert first in engine.learned and first not in engine.met
    assert references(detector, first) == 0
    assert all(references(detector, agent) > 0 for agent in AGENTS[2:])


@pytest.mark.parametrize("changed", [True, False])
def test_forget_agent_returns_the_state_only_when_it_was_not_taken(changed: bool) -> None:
    engine = Engine(bounded(None))
    agent = AGENTS[0]
    learn_task(engine, agent, "t1", 100.0)
    detector = engine.detector
    state = detector.agent_state(agent)
    assert not detector.take_learned_agents()  # the engine wrote it back after the event
    if changed:  # learned since (as in a sweep, before the engine's write-back)
        later = call(ts=150.0, task="t9", agent=agent)
        detector.end_task(agent, None, [(later, engine.catalogue.resolve(later))], learn=True)
        state = detector.agent_state(agent)
    forgotten = detector.forget_agent(agent)
    assert forgotten == (state if changed else None)
    assert detector.agent_state(agent) != state and agent not in detector.learned_agents()
    detector.load_agent_state(state)
    assert detector.agent_state(agent) == state
