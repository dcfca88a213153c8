"""The SDK against a real Kafka: what the publisher writes, what the subscriber lets through."""

import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from intentwatch import RevocationSubscriber, TelemetryPublisher
from intentwatch.contracts import (
    KIND_HEADER,
    TOPICS,
    Revocation,
    decode_task_event,
    decode_toolcall,
)
from intentwatch.demo import create_topics
from intentwatch.pipeline.settings import Settings
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import encode_revocation
from tests import forge

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def topics(kafka_bootstrap):
    """The topics as a worker makes them (not auto-created with one partition)."""
    create_topics(kafka_bootstrap, Settings().partitions)


@pytest.fixture
def agent() -> str:
    return f"spiffe://acme.org/agents/sdk-test/{uuid.uuid4().hex[:12]}"


def tail(bootstrap: str, topics: list[str]) -> KafkaConsumer:
    """A consumer positioned at the current end of ``topics`` (created if missing)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="latest", fetch_max_wait_ms=100)
    consumer.subscribe(topics)
    deadline = time.monotonic() + 30
    while len({tp.topic for tp in consumer.assignment()}) < len(topics):
        assert time.monotonic() < deadline, "topics were not assigned"
        consumer.poll(timeout_ms=100)
    for partition in consumer.assignment():
        consumer.position(partition)
    return consumer


def read(consumer: KafkaConsumer, agent: str, count: int) -> list:
    records, deadline = [], time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records += [r for r in batch if r.key == agent.encode()]
    return records


def test_publisher_writes_validated_records_keyed_by_agent(kafka_bootstrap, agent):
    consumer = tail(kafka_bootstrap, [TOPICS["events"]])
    with TelemetryPublisher(kafka_bootstrap, agent_id=agent) as publisher:

        @publisher.instrument("crm.lookup_customer", action="read", target_arg="customer_id")
        def lookup_customer(customer_id: str) -> dict:
            return {"id": customer_id}

        with publisher.task("t1", credential_id="c1"):
            lookup_customer("c-17")
            lookup_customer("c-18")
        publisher.flush()

    records = read(consumer, agent, 4)
    consumer.close()
    kinds = [dict(r.headers)[KIND_HEADER] for r in records]
    assert kinds == [b"task", b"toolcall", b"toolcall", b"task"]  # in the order they happened
    calls = [decode_toolcall(r.value) for r in records[1:3]]
    events = [decode_task_event(r.value) for r in (records[0], records[3])]
    assert [(c.target, c.outcome, c.credential_id) for c in calls] == [
        ("c-17", "ok", "c1"), ("c-18", "ok", "c1")]
    assert [e.status for e in events] == ["started", "completed"]
    assert len({r.partition for r in records}) == 1  # one agent, one log


def test_subscriber_verifies_and_deduplicates_real_records(kafka_bootstrap, agent):
    key, impostor = generate_key("ES256"), generate_key("ES256")
    audience = "urn:intentwatch:credential-brokers"

    def token(signer, revocation_id):
        revocation = Revocation(
            revocation_id=revocation_id, agent_id=agent, task_id="t1", credential_ids=["c1"],
            reason_code="intent_violation", reason="sent mail outside acme.org", score=1.0,
            evidence=["e1"], event_ts=time.time())
        return encode_revocation(revocation, signer, issuer="urn:intentwatch",
                                 audience=audience, issued_at=time.time())

    good = token(key, "rev-good")
    _, payload, _ = forge.segments(good.token)
    tampered = forge.with_payload(good.token, {**json.loads(payload), "txn": "t-other"})
    resigned = forge.with_header(token(impostor, "rev-forged").token, kid=key.kid)
    unknown_key = token(impostor, "rev-unknown").token

    rejected = []
    subscriber = RevocationSubscriber(
        kafka_bootstrap, jwks={"keys": [key.public_jwk()]}, agents={agent}, audience=audience,
        on_rejected=rejected.append)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for value in [tampered, good.token, resigned, good.token, unknown_key]:
        producer.send(TOPICS["revocations"], key=agent.encode(), value=value.encode(),
                      headers=good.headers)
    producer.flush()
    producer.close()

    received, deadline = [], time.monotonic() + 30
    while subscriber.accepted + subscriber.duplicates + sum(subscriber.rejected.values()) < 5:
        assert time.monotonic() < deadline, "the subscriber did not see all five records"
        received += subscriber.poll(0.2)
    subscriber.close()

    assert [r.revocation_id for r in received] == ["rev-good"]
    assert received[0].credential_ids == ["c1"] and received[0].agent_id == agent
    assert subscriber.duplicates == 1
    assert subscriber.rejected == {"bad_signature": 2, "unknown_kid": 1}
    assert sorted(r.code for r in rejected) == ["bad_signature", "bad_signature", "unknown_kid"]
    offsets = [r.offset for r in rejected]
    assert offsets == sorted(offsets) and all(isinstance(o, int) for o in offsets)
