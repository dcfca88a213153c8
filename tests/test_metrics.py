"""The worker's Prometheus metrics: what the pipeline's hooks count, lag sampling, the format.

The pipeline runs its faust agents with ``agent.test_context()`` (no Kafka); consumer lag
is sampled from a stand-in consumer, since only a running worker has a real one (the
integration test in ``test_integration_prometheus.py`` scrapes that one).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from intentwatch.contracts import TOPICS, Revocation
from intentwatch.models.engine import Outcome
from intentwatch.pipeline.app import Pipeline
from intentwatch.pipeline.metrics import Metrics
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.worker import load_keyring
from intentwatch.tokens import grants, keys
from intentwatch.tokens.grants import GRANT_REJECTION_CODES, GrantVerifier
from tests.pipeline_harness import (
    ISSUER_KEY,
    OTHER_KEY,
    Sent,
    agent_id,
    call,
    grant_token,
    put,
)


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    settings = Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", partitions=4)
    verifier = GrantVerifier({"keys": [ISSUER_KEY.public_jwk()]})
    return Pipeline(settings, keyring=load_keyring(settings.keys_dir), grant_verifier=verifier,
                    send=Sent())


async def test_the_hooks_count_what_the_pipeline_did(pipeline: Pipeline) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        await put(events, "grant", grant_token(agent, "t2", key=OTHER_KEY), agent)
        await put(events, "toolcall", call(agent), agent)
        await put(events, "toolcall", call(agent), agent)
        await put(events, "toolcall", call(agent, tool="iam.update_user_password"), agent)
        await put(events, "toolcall", b'{"event_id": ', agent)

    sample = pipeline.metrics.registry.get_sample_value
    assert sample("intentwatch_records_consumed_total", {"topic": TOPICS["events"]}) == 6
    assert sample("intentwatch_grants_verified_total") == 1
    assert sample("intentwatch_grants_rejected_total", {"code": "unknown_kid"}) == 1
    assert sample("intentwatch_verdicts_total", {"decision": "allow"}) == 2
    assert sample("intentwatch_verdicts_total", {"decision": "revoke"}) == 1
    assert sample("intentwatch_revocations_total", {"reason": "intent_violation"}) == 1
    assert sample("intentwatch_revocation_latency_seconds_count",
                  {"reason": "intent_violation"}) == 1
    for reason in ("unknown_kid", "ContractError"):
        labels = {"reason": reason, "topic": TOPICS["events"]}
        assert sample("intentwatch_dead_letters_total", labels) == 1
    assert sample("intentwatch_engine_seconds_count", {"event": "toolcall"}) == 3
    assert sample("intentwatch_engine_seconds_count", {"event": "grant"}) == 1
    assert sample("intentwatch_event_lag_seconds_count", {"event": "toolcall"}) == 3
    # the worker's own counters (/status) agree
    published = pipeline.status()["published"]
    assert published["verdicts.allow"] == 2 and published["revocations.intent_violation"] == 1

    body, _ = await pipeline.metrics.page(None)
    assert agent.encode() not in body and b"spiffe://" not in body


async def test_a_tick_record_is_timed_and_what_it_publishes_counted(pipeline: Pipeline) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "tick", b"", agent, key=None, timestamp=time.time())
        await put(events, "grant", grant_token(agent, ttl=5.0), agent)
        await put(events, "tick", b"", agent, key=None, timestamp=time.time() + 10.0)

    sample = pipeline.metrics.registry.get_sample_value
    assert sample("intentwatch_engine_seconds_count", {"event": "tick"}) == 2
    assert sample("intentwatch_revocations_total", {"reason": "ttl_expired"}) == 1
    assert sample("intentwatch_audits_total") == 1


class TP(NamedTuple):
    topic: str
    partition: int


class StandInConsumer:
    """What the lag sampling reads of faust's consumer: assignment, high watermarks,
    positions."""

    def __init__(self, highwaters: dict[TP, int], positions: dict[TP, int]) -> None:
        self.highwaters = highwaters
        self.positions = positions

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


async def test_consumer_lag_per_partition_in_records_and_seconds() -> None:
    events, changelog = TOPICS["events"], "intentwatch-grants-changelog"
    consumer = StandInConsumer(
        highwaters={TP(events, 0): 10, TP(events, 1): 7, TP(events, 2): 50, TP(changelog, 0): 99},
        positions={TP(events, 2): 45},
    )
    metrics = Metrics(consumer=lambda: consumer, topics=[events], wall=lambda: 100.0,
                      tables={"grants": {"a": 1, "b": 2}})
    metrics.consumed(events, 0, offset=5, timestamp=80.0)  # 4 records wait behind it
    metrics.consumed(events, 1, offset=6, timestamp=90.0)  # caught up
    await metrics.page(None)

    sample = metrics.registry.get_sample_value
    lag = {p: sample("intentwatch_consumer_lag_records", {"topic": events, "partition": str(p)})
           for p in range(3)}
    seconds = {p: sample("intentwatch_consumer_lag_seconds", {"topic": events, "partition": str(p)})
               for p in range(3)}
    assert lag == {0: 4, 1: 0, 2: 5}  # partition 2: nothing processed yet, from its position
    assert seconds == {0: 20.0, 1: 0.0, 2: None}  # how old is unknown before a record
    assert sample("intentwatch_consumer_lag_records",
                  {"topic": changelog, "partition": "0"}) is None
    assert sample("intentwatch_table_keys", {"table": "grants"}) == 2

    metrics.assigned([TP(events, 1), TP(events, 2)])  # partition 0 went to another worker
    consumer.highwaters.pop(TP(events, 0))
    consumer.positions[TP(events, 0)] = 0
    await metrics.page(None)
    assert sample("intentwatch_consumer_lag_records", {"topic": events, "partition": "0"}) is None
    assert sample("intentwatch_consumer_lag_records", {"topic": events, "partition": "1"}) == 0


async def test_metrics_before_the_consumer_started_are_served() -> None:
    class NotStarted:
        def assignment(self) -> set[TP]:
            raise RuntimeError("Consumer thread not yet started")

    body, content_type = await Metrics(consumer=NotStarted, topics=["t"]).page(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"intentwatch_verdicts", "intentwatch_consumer_lag_records"} <= names


async def test_openmetrics_is_served_to_who_asks_for_it() -> None:
    body, content_type = await Metrics().page("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")


def test_every_grant_rejection_code_starts_at_zero() -> None:
    """Alerts on ``increase()`` see the first rejection only if its series was there before:
    every code the verifiers raise is pre-declared."""
    sources = "".join(Path(module.__file__ or "").read_text() for module in (grants, keys))
    raised = set(re.findall(r'(?:GrantRejected|self\.rejected)\(\s*"(\w+)"', sources))
    assert raised and raised <= set(GRANT_REJECTION_CODES)
    sample = Metrics().registry.get_sample_value
    assert all(sample("intentwatch_grants_rejected_total", {"code": code}) == 0
               for code in GRANT_REJECTION_CODES)


def test_a_revocation_the_broker_did_not_take_is_counted_apart() -> None:
    def revocation(code: str) -> Revocation:
        return Revocation(revocation_id=code, agent_id="spiffe://acme.org/a1", task_id="t1",
                          credential_ids=["c1"], reason_code=code, reason="", score=1.0,
                          event_ts=99.0)

    metrics = Metrics(wall=lambda: 100.0)
    published, lost = revocation("intent_violation"), revocation("anomaly")
    metrics.published(Outcome(revocations=[published, lost]), lost=[lost])
    sample = metrics.registry.get_sample_value
    assert sample("intentwatch_revocations_total", {"reason": "intent_violation"}) == 1
    assert sample("intentwatch_revocations_total", {"reason": "anomaly"}) == 0
    assert sample("intentwatch_revocations_unpublished_total") == 1
    assert sample("intentwatch_revocation_latency_seconds_sum", {"reason": "intent_violation"}) \
        == 1.0
    assert sample("intentwatch_revocation_latency_seconds_count", {"reason": "anomaly"}) == 0


def test_an_event_the_engine_refuses_is_not_engine_work() -> None:
    """It becomes a dead letter: counting it as engine work too would count it twice."""
    metrics = Metrics()
    count = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "intentwatch_engine_seconds_count", {"event": "tick"}
    ) or 0.0
    with metrics.engine_time(None):
        pass
    with pytest.raises(ValueError), metrics.engine_time(None):
        raise ValueError("refused")
    assert count() == 1.0
