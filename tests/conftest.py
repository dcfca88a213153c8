"""Shared pytest fixtures.

``worker`` (module scope) runs a real worker process (``intentwatch.local.worker``) against the
session's broker, trusting a grant issuer key made for the test session, and reads the
output topics for the tests. Tests isolate themselves by unique agent ids.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from intentwatch.local import processes

pytest_plugins = ["tests.kafka_broker"]

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """:func:`intentwatch.local.processes.wait_for`, failing the test when it times out."""
    try:
        return processes.wait_for(fetch, done, timeout, what)
    except TimeoutError as error:
        pytest.fail(str(error))


class TopicRecords:
    """Every record of one topic, read from the beginning and grouped by key."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
            isolation_level="read_committed",  # what the workers' transactions committed
        )
        partitions = wait_for(lambda: self._consumer.partitions_for_topic(topic), bool, 60,
                              f"topic {topic}")
        self._consumer.assign([TopicPartition(topic, p) for p in partitions])
        self._consumer.seek_to_beginning()
        self._by_key: dict[bytes | None, list[Any]] = defaultdict(list)
        self.topic = topic

    def of(self, key: str, count: int = 1, timeout: float = 60.0) -> list[Any]:
        """The records keyed ``key``, once there are at least ``count`` of them."""
        return wait_for(lambda: self.now(key), lambda got: len(got) >= count, timeout,
                        f"{count} record(s) for {key} on {self.topic}")

    def now(self, key: str) -> list[Any]:
        """The records keyed ``key`` read so far (after one short poll)."""
        for batch in self._consumer.poll(timeout_ms=100).values():
            for record in batch:
                self._by_key[record.key].append(record)
        return list(self._by_key[key.encode()])

    def close(self) -> None:
        self._consumer.close()


class RunningWorker:
    """A worker process (:class:`~intentwatch.local.worker.WorkerProcess`) and the clients
    the tests use to talk to it; ready once it has read the shared input log to its end
    (at once, without ``catch_up``)."""

    def __init__(self, bootstrap: str, home: Path, issuer_key: Any,
                 app_id: str | None = None, settings: dict[str, str] | None = None,
                 *, catch_up: bool = True) -> None:
        from intentwatch import RevocationSubscriber, TelemetryPublisher
        from intentwatch.contracts import TOPICS
        from intentwatch.local.worker import WorkerError, WorkerProcess

        self.bootstrap = bootstrap
        self.issuer_key = issuer_key
        self.issuer, self.audience = "urn:intentwatch:test", "urn:test:brokers"
        jwks_file = home / "issuers.jwks.json"
        jwks_file.write_text(json.dumps({"keys": [issuer_key.public_jwk()]}))
        self.worker = WorkerProcess.start(bootstrap, home, env={
            "INTENTWATCH_APP_ID": app_id or f"iw-test-{uuid.uuid4().hex[:8]}",
            "INTENTWATCH_PARTITIONS": str(topic_partitions(bootstrap, TOPICS["events"])),
            "INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks_file),
            "INTENTWATCH_ISSUER": self.issuer,
            "INTENTWATCH_AUDIENCE": self.audience,
            "INTENTWATCH_TICK_SECONDS": "0.5",
            "INTENTWATCH_LOG_LEVEL": "info",
            **(settings or {}),  # more INTENTWATCH_* variables
        })
        self.process, self.log_file = self.worker.process, self.worker.log_file
        self.url, self.jwks_url = self.worker.url, self.worker.jwks_url
        try:
            status = self.worker.wait_ready()
            if catch_up:
                self.wait_caught_up(len(status["partitions"]))
            self.publisher = TelemetryPublisher(bootstrap)
            self.revocation_subscriber = RevocationSubscriber(
                bootstrap, jwks=self.jwks_url, offset="earliest",
                audience=self.audience, issuer=self.issuer,
            )
            self.topics = {name: TopicRecords(bootstrap, TOPICS[name])
                           for name in ("verdicts", "revocations", "audit", "dlq")}
        except WorkerError as error:
            self.stop()
            pytest.fail(str(error))
        except BaseException:
            self.stop()
            raise
        self._revocations: dict[str, list[Any]] = defaultdict(list)

    def status(self) -> dict[str, Any]:
        return self.worker.status()

    def revocations(self, agent: str, count: int = 1, timeout: float = 60.0) -> list[Any]:
        """Verified revocations for ``agent``, once there are ``count`` of them."""
        def fetch() -> list[Any]:
            for revocation in self.revocation_subscriber.poll(0.1):
                self._revocations[revocation.agent_id].append(revocation)
            return list(self._revocations[agent])

        return wait_for(fetch, lambda got: len(got) >= count, timeout,
                        f"{count} revocation(s) for {agent}")

    def grant(self, agent: str, task: str = "t1", *, ttl: float = 900.0, key: Any = None,
              **changes: Any) -> str:
        """A signed grant for ``agent``'s ``task``: CRM tools and targets, internal data."""
        from intentwatch.tokens.grants import sign_grant

        now = time.time()
        payload = {
            "grant_id": f"g-{agent.rsplit('/', 1)[1]}-{task}", "agent_id": agent,
            "task_id": task, "credential_ids": [f"c-{agent.rsplit('/', 1)[1]}-{task}"],
            "intent": "look up customer c-42 in the CRM and answer ticket 42",
            "tools": ["crm.*"], "targets": ["crm://*", "*.acme.org"],
            "data_labels": ["internal"], "issued_at": now if ttl > 0 else now + ttl - 60,
            "expires_at": now + ttl, "issuer": "https://broker.acme.org", **changes,
        }
        return sign_grant(payload, key or self.issuer_key)

    def close(self) -> None:
        self.publisher.close()
        self.revocation_subscriber.close()
        for records in self.topics.values():
            records.close()

    def stop(self) -> None:
        """Stop the worker process by its pid: SIGTERM, then SIGKILL if it hangs."""
        self.worker.stop()

    def wait_caught_up(self, partitions: int, timeout: float = 600.0) -> None:
        """Wait until the worker has read the shared input log up to its end.

        A new consumer group starts at the beginning of the session's input topic, which
        every earlier test (and every worker's tick records) has filled: a test's own
        records wait behind all of it. Caught up is every held partition at most a few
        records behind (ticks keep arriving), as the worker's own lag metric says.
        """
        from prometheus_client.parser import text_string_to_metric_families

        from intentwatch.contracts import TOPICS

        def lags() -> list[float]:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
                text = response.read().decode()
            return [sample.value for family in text_string_to_metric_families(text)
                    if family.name == "intentwatch_consumer_lag_records"
                    for sample in family.samples if sample.labels["topic"] == TOPICS["events"]]

        wait_for(lags, lambda found: len(found) == partitions and max(found) <= 20, timeout,
                 "the worker to catch up with the input log")


def topic_partitions(bootstrap: str, topic: str) -> int:
    """The partition count of an existing ``topic`` (the worker must match it), or the default."""
    from kafka import KafkaConsumer

    from intentwatch.pipeline.settings import Settings

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    return len(partitions) if partitions else Settings().partitions


@pytest.fixture(scope="session")
def issuer_key() -> Any:
    """The trusted grant issuer's signing key."""
    from intentwatch.tokens.keys import generate_key

    return generate_key("EdDSA")


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, issuer_key: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWorker]:
    """A real worker process for this test module; stopped by pid at the end."""
    running = RunningWorker(kafka_bootstrap, tmp_path_factory.mktemp("worker"), issuer_key)
    try:
        yield running
    finally:
        running.close()
        running.stop()


@pytest.fixture
def sent() -> Any:
    """What a ``pipeline`` published (:class:`tests.pipeline_harness.Sent`)."""
    from tests.pipeline_harness import Sent

    return Sent()


@pytest.fixture
def pipeline(tmp_path: Path, sent: Any) -> Any:
    """A faust pipeline without Kafka (memory tables) publishing to ``sent``."""
    from tests.pipeline_harness import make_pipeline

    return make_pipeline(tmp_path, sent)


@pytest.fixture
def agent() -> str:
    """A SPIFFE ID no other test uses."""
    return f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:10]}"
