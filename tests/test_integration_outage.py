"""When Kafka goes away and comes back: a broker of this module's own, stopped and restarted
by its pid, with the real SDK and a real worker."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from intentwatch import PublishError, RevocationSubscriber, TelemetryPublisher
from intentwatch.contracts import KIND_HEADER, TOPICS, Revocation, decode_toolcall
from intentwatch.demo import create_topics
from intentwatch.local.kafka_broker import LocalKafka, down, free_port, status, up
from intentwatch.local.worker import WorkerProcess
from intentwatch.pipeline.worker import EXIT_STOP_TIMEOUT
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import encode_revocation
from tests.conftest import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class Broker:
    """A broker this module may stop and start again on the same port and data."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.running: LocalKafka = up(self.port, home=home)
        self.bootstrap = self.running.bootstrap

    def stop(self) -> None:
        pid = self.running.pid
        assert down(self.home)  # SIGTERM to that pid (SIGKILL if it hangs)
        assert status(self.home) is None, f"broker {pid} still runs"

    def start(self) -> float:
        """Start it again; the monotonic time at which it answers."""
        self.running = up(self.port, home=self.home)
        return time.monotonic()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = Broker(tmp_path_factory.mktemp("outage-kafka"))
    create_topics(started.bootstrap, 1)
    try:
        yield started
    finally:
        down(started.home)


@pytest.fixture
def agent() -> str:
    return f"spiffe://acme.org/agents/outage/{uuid.uuid4().hex[:10]}"


def calls_of(bootstrap: str, agent: str) -> list[str]:
    """Event ids of ``agent``'s tool calls on the topic, in its order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partition = TopicPartition(TOPICS["events"], 0)
    consumer.assign([partition])
    consumer.seek_to_beginning()
    end = consumer.end_offsets([partition])[partition]
    found: list[str] = []
    while consumer.position(partition) < end:
        for records in consumer.poll(timeout_ms=500).values():
            found += [decode_toolcall(r.value).event_id for r in records
                      if r.key == agent.encode() and (KIND_HEADER, b"toolcall") in r.headers]
    consumer.close()
    return found


def test_fail_closed_the_tool_does_not_run_while_kafka_is_away(broker: Broker, agent: str):
    publisher = TelemetryPublisher(broker.bootstrap, agent_id=agent, timeout=2.0)
    ran: list[str] = []

    @publisher.instrument("crm.lookup_customer", action="read", target_arg="customer_id")
    def lookup(customer_id: str) -> dict:
        ran.append(customer_id)
        return {"id": customer_id}

    with publisher.task("t1"):
        lookup("c-1")
    publisher.flush()
    broker.stop()
    try:
        with pytest.raises(PublishError, match=r"Kafka at .*intentwatch kafka up"), \
                publisher.task("t2"):  # its start cannot be delivered: no tool runs
            lookup("c-2")
        assert ran == ["c-1"]
    finally:
        broker.start()
    with publisher.task("t3"):  # Kafka is back: tools run again
        lookup("c-3")
    with pytest.raises(PublishError, match=r"^2 record\(s\) were not delivered"):
        publisher.close()  # t2's start and end were lost, and that is said once
    assert ran == ["c-1", "c-3"]
    assert len(calls_of(broker.bootstrap, agent)) == 2


def test_fail_open_buffers_a_bounded_number_and_sends_them_in_order(broker: Broker, agent: str):
    publisher = TelemetryPublisher(broker.bootstrap, agent_id=agent, policy="fail_open",
                                   buffer_size=5, timeout=2.0)
    first = publisher.publish_toolcall({"task_id": "t1", "tool": "crm.lookup"}).event_id
    publisher.flush()
    broker.stop()
    try:
        sent = [publisher.publish_toolcall({"task_id": "t1", "tool": "crm.lookup"}).event_id
                for _ in range(8)]
        assert publisher.delivery.dropped == 3 and publisher.delivery.waiting == 5
        with pytest.raises(PublishError, match=r"not acknowledged|still buffered"):
            publisher.flush(timeout=1.0)
    finally:
        broker.start()
    publisher.flush(timeout=60.0)
    publisher.close()
    assert calls_of(broker.bootstrap, agent) == [first, *sent[:5]]


def test_fail_open_starts_without_kafka_and_delivers_when_it_comes(broker: Broker, agent: str):
    broker.stop()
    try:
        publisher = TelemetryPublisher(broker.bootstrap, agent_id=agent, policy="fail_open",
                                       timeout=1.0)
        sent = [publisher.publish_toolcall({"task_id": "t1", "tool": "crm.lookup"}).event_id
                for _ in range(3)]
        assert publisher.delivery.waiting == 3
    finally:
        broker.start()
    publisher.flush(timeout=60.0)
    publisher.close()
    assert calls_of(broker.bootstrap, agent) == sent


def revocation_token(key, agent: str, revocation_id: str) -> tuple[bytes, list]:
    revocation = Revocation(
        revocation_id=revocation_id, agent_id=agent, task_id="t1", credential_ids=["c1"],
        reason_code="intent_violation", reason="out of grant", score=1.0, evidence=["e1"],
        event_ts=time.time())
    signed = encode_revocation(revocation, key, issuer="urn:intentwatch",
                               audience="urn:test", issued_at=time.time())
    return signed.token.encode(), signed.headers


def test_the_subscriber_resumes_after_an_outage_and_loses_no_revocation(
    broker: Broker, agent: str
):
    key = generate_key("ES256")
    subscriber = RevocationSubscriber(broker.bootstrap, jwks={"keys": [key.public_jwk()]},
                                      agents={agent}, ready_timeout=5.0)
    broker.stop()
    try:
        assert subscriber.poll(1.0) == []
    finally:
        back = broker.start()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    value, headers = revocation_token(key, agent, "rev-after-outage")
    producer.send(TOPICS["revocations"], key=agent.encode(), value=value, headers=headers)
    producer.flush()
    producer.close()
    received = wait_for(lambda: subscriber.poll(0.2), bool, 30, "the revocation")
    print(f"revocation received {time.monotonic() - back:.1f} s after the broker's return")
    assert [r.revocation_id for r in received] == ["rev-after-outage"]
    subscriber.close()


def http(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_worker_says_kafka_is_unreachable_and_logs_it_once(broker: Broker, tmp_path: Path):
    jwks = tmp_path / "issuers.jwks.json"
    jwks.write_text(json.dumps({"keys": [generate_key("EdDSA").public_jwk()]}))
    worker = WorkerProcess.start(broker.bootstrap, tmp_path,
                                 env={"INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks)})
    url = worker.url
    try:
        worker.wait_ready()
        assert http(f"{url}/ready")[0] == 200
        assert http(f"{url}/health")[1]["kafka"]["reachable"] is True
        lines_before = len(worker.log_file.read_text().splitlines())
        broker.stop()
        try:
            down_status = wait_for(lambda: http(f"{url}/status")[1],
                                   lambda s: not s["kafka"]["reachable"], 30, "unreachable")
            assert down_status["ready"] is False
            code, ready = http(f"{url}/ready")
            assert code == 503 and ready["kafka"]["reachable"] is False
            code, health = http(f"{url}/health")
            assert code == 200 and health["status"] == "kafka unreachable"
            time.sleep(8)  # an outage of some seconds: the client retries many times a second
            during = worker.log_file.read_text().splitlines()[lines_before:]
        finally:
            broker.start()
        wait_for(lambda: http(f"{url}/status")[1], lambda s: s["kafka"]["reachable"], 60,
                 "reachable again")
    finally:
        worker.stop()
    unreachable = [line for line in during if "is unreachable" in line]
    assert len(unreachable) == 1, during
    assert len(during) <= 5, during  # the outage once, perhaps a reminder; no client noise
    assert any("answers again" in line for line in worker.log_file.read_text().splitlines())


def test_a_worker_stopped_while_kafka_is_away_exits_all_the_same(broker: Broker, tmp_path: Path):
    """faust's shutdown waits for its consumer thread, which with the broker gone can fail
    while stopping and never say so: without ``INTENTWATCH_STOP_SECONDS`` the process would
    hang until killed (seen: still running 60 s after SIGTERM)."""
    jwks = tmp_path / "issuers.jwks.json"
    jwks.write_text(json.dumps({"keys": [generate_key("EdDSA").public_jwk()]}))
    worker = WorkerProcess.start(broker.bootstrap, tmp_path,
                                 env={"INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks),
                                      "INTENTWATCH_STOP_SECONDS": "5"})
    try:
        worker.wait_ready()
        broker.stop()
        try:
            wait_for(lambda: http(f"{worker.url}/status")[1],
                     lambda s: not s["kafka"]["reachable"], 30, "unreachable")
            worker.process.send_signal(signal.SIGTERM)
            code = worker.process.wait(timeout=120)
        finally:
            broker.start()
    finally:
        worker.stop()
    log = worker.log_file.read_text()
    assert code in (0, EXIT_STOP_TIMEOUT), log[-2000:]
    if code == EXIT_STOP_TIMEOUT:
        assert "did not stop within 5 s of the signal" in log
