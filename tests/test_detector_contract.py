"""One contract for every detector of the baseline and for the whole detector.

Like river's ``check_estimator``: the same input gives the same scores, ``score_one``
changes nothing, learned state survives a round trip, and memory stays bounded under a
stream of distinct values.
"""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentwatch.contracts import Grant, ToolCall, role_of
from intentwatch.models.baseline import Baseline
from intentwatch.models.catalogue import ToolCatalogue
from intentwatch.models.config import ScoringConfig
from intentwatch.models.detection import Detector
from intentwatch.models.detectors import BaselineConfig
from intentwatch.models.features import TaskContext
from intentwatch.models.learned import AgentState, Baselines, RoleState
from intentwatch.models.protocol import OnlineDetector

AGENT = "spiffe://acme.org/agents/support/a1"
CATALOGUE = ToolCatalogue()
NAMES = sorted(Baseline().detectors)
SMALL = BaselineConfig(max_tools=8, max_targets=16, max_sites=16, max_transitions=16,
                       max_fleet_domains=64, level_scale=2.0)


def observations(n: int, distinct: bool = False, offset: int = 0):
    """``n`` calls of one task each, cycling a few tools and targets (or all distinct)."""
    for i in range(offset, offset + n):
        k = i if distinct else i % 5
        call = ToolCall(
            event_id=str(i), ts=float(i), agent_id=AGENT, task_id=f"t{i}",
            tool=f"svc{k}.send_email" if k % 2 else f"svc{k}.get_record",
            target=f"https://h{k}.example/api/items/{i}", bytes_out=100 + k, bytes_in=50 + k,
            data_labels=["confidential"] if k % 3 == 0 else ["internal"],
        )
        x = TaskContext(AGENT, intent="Look up the record").observe(
            call, CATALOGUE.resolve(call))
        yield replace(x, unasked=(k % 4) / 4)


def learned(baseline: Baseline) -> bytes:
    """Everything ``baseline`` learned (of the fleet, the one role and the one agent), as
    data."""
    return msgspec.msgpack.encode((baseline.population_state(),
                                   baseline.role_state(role_of(AGENT)),
                                   baseline.agent_state(AGENT)))


def restored(baseline: Baseline) -> Baseline:
    """A new baseline of the same config that took over what ``baseline`` learned."""
    population, role, agent = msgspec.msgpack.decode(
        learned(baseline), type=tuple[Baselines, RoleState, AgentState])
    twin = Baseline(baseline.config)
    twin.load_population_state(population)
    twin.load_role_state(role)
    twin.load_agent_state(agent)
    return twin


def trained(config: BaselineConfig | None = None, n: int = 60) -> Baseline:
    baseline = Baseline(config or BaselineConfig())
    for x in observations(n):
        baseline.learn_one(x)
    return baseline


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_follows_the_protocol(name: str) -> None:
    assert isinstance(Baseline().detectors[name], OnlineDetector)


@pytest.mark.parametrize("name", NAMES)
def test_score_one_changes_nothing_and_is_deterministic(name: str) -> None:
    baseline, twin = trained(), trained()
    detector = baseline.detectors[name]
    before = learned(baseline)
    probes = list(observations(10, distinct=True, offset=1000))
    scores = [detector.score_one(x) for x in probes]
    for x, score in zip(probes, scores, strict=True):
        if score:  # a sentence for every score it gives
            assert isinstance(detector.explain(x), str)
    assert learned(baseline) == before
    assert scores == [twin.detectors[name].score_one(x) for x in probes]
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("name", NAMES)
def test_learned_state_survives_a_round_trip(name: str) -> None:
    baseline = trained()
    twin = restored(baseline)
    probes = list(observations(10, distinct=True, offset=2000))
    assert [baseline.detectors[name].score_one(x) for x in probes] == [
        twin.detectors[name].score_one(x) for x in probes]
    for x in probes:  # and they go on learning alike
        baseline.learn_one(x)
        twin.learn_one(x)
    assert learned(twin) == learned(baseline)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=300, max_value=900))
def test_memory_is_bounded_under_distinct_values(n: int) -> None:
    baseline = trained(SMALL, n=0)
    for x in observations(200, distinct=True):
        baseline.learn_one(x)
    size = len(learned(baseline))
    for x in observations(n, distinct=True, offset=200):
        baseline.learn_one(x)
    assert len(learned(baseline)) <= 1.25 * size


def _grant(task: str) -> Grant:
    return Grant(grant_id=task, agent_id=AGENT, task_id=task, credential_ids=["c"],
                 tools=["*"], targets=["*"], data_labels=["restricted"], issued_at=0,
                 expires_at=9e9, issuer="broker", intent="Reply to jane@customer.example")


def _replay(detector: Detector, n: int) -> list[float]:
    scores = []
    for k in range(n):
        task = f"t{k}"
        made, scoring = [], detector.open_task(AGENT, _grant(task))
        for i, target in enumerate(("https://crm.acme.org/c/1", "mailto:jane@customer.example",
                                    f"mailto:x{k % 7}@other.example")):
            call = ToolCall(event_id=f"{task}-{i}", ts=10.0 * k + i, agent_id=AGENT,
                            task_id=task, tool=("crm.get", "gmail.send_email")[i > 0],
                            target=target)
            info = CATALOGUE.resolve(call)
            scores.append(detector.assess(call, _grant(task), info, scoring).score)
            made.append((call, info))
        detector.end_task(AGENT, scoring, made, learn=True)
    return scores


def test_the_whole_detector_is_deterministic_and_its_learned_state_round_trips() -> None:
    config = ScoringConfig(detectors={"multivariate": {"window_size": 20}})
    first, second = Detector(config), Detector(config)
    assert _replay(first, 40) == _replay(second, 40)
    twin = Detector(config)
    twin.load_state(first.state())
    assert _replay(twin, 5) == _replay(first, 5)
    assert twin.state() == first.state()
