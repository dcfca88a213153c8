"""The SDK without a broker: Kafka clients are replaced by in-memory fakes."""

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import ClassVar

import pytest

import intentwatch.sdk.delivery
import intentwatch.sdk.subscriber
from intentwatch import (
    ContractError,
    IntentwatchError,
    PublishError,
    RevocationSubscriber,
    TelemetryPublisher,
)
from intentwatch.contracts import (
    KIND_HEADER,
    TOPICS,
    Revocation,
    decode_task_event,
    decode_toolcall,
)
from intentwatch.local.kafka_broker import free_port
from intentwatch.reference import AccessDenied, CredentialBroker, ToolGateway
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import encode_revocation
from tests import forge

AGENT = "spiffe://acme.org/agents/support/a1"
OTHER = "spiffe://acme.org/agents/support/a2"


def grant_payload() -> dict:
    return {"grant_id": "g1", "agent_id": AGENT, "task_id": "t1", "credential_ids": ["c1"],
            "tools": ["crm.*"], "targets": ["crm.acme.org"], "data_labels": ["internal"],
            "issued_at": 1_793_606_400, "expires_at": 1_793_610_000, "issuer": "urn:broker"}


# -- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeFuture:
    errbacks: list = field(default_factory=list)

    def add_errback(self, callback, *args):
        self.errbacks.append((callback, args))

    def add_callback(self, callback, *args):
        pass

    def fail(self, error):
        for callback, args in self.errbacks:
            callback(error, *args)


class FakeProducer:
    def __init__(self, **config):
        self.config = config
        self.sent = []
        self.futures = []

    def send(self, topic, value, key, headers, timestamp_ms):
        self.sent.append(SimpleNamespace(topic=topic, key=key.decode(), value=value,
                                         kind=dict(headers)[KIND_HEADER].decode(),
                                         timestamp_ms=timestamp_ms))
        self.futures.append(FakeFuture())
        return self.futures[-1]

    def partitions_for(self, topic):
        return {0}

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class FakeConsumer:
    """Delivers the records queued in ``FakeConsumer.records`` on the next poll."""

    records: ClassVar[list] = []

    def __init__(self, **config):
        self.config = config
        self.closed = False

    def partitions_for_topic(self, topic):
        return {0}

    def subscribe(self, topics):
        self.topics = topics

    def assignment(self):
        return {("intentwatch.revocations.v1", 0)}

    def position(self, partition):
        return 0

    def poll(self, timeout_ms=0):
        records, FakeConsumer.records = FakeConsumer.records, []
        return {("intentwatch.revocations.v1", 0): records} if records else {}

    def close(self):
        self.closed = True


@pytest.fixture
def publisher(monkeypatch):
    monkeypatch.setattr(intentwatch.sdk.delivery, "KafkaProducer", FakeProducer)
    return TelemetryPublisher("kafka.invalid:9092")


def sent(publisher, kind):
    """What the publisher sent of ``kind``, all on the one input topic."""
    records = publisher.delivery._producer.sent
    assert {record.topic for record in records} <= {TOPICS["events"]}
    return [record for record in records if record.kind == kind]


# -- publishing ------------------------------------------------------------------------------


def test_producer_is_idempotent_and_waits_for_all_replicas(publisher):
    config = publisher.delivery._producer.config
    assert config["acks"] == "all" and config["enable_idempotence"] is True
    assert config["bootstrap_servers"] == ["kafka.invalid:9092"]


def test_bootstrap_comes_from_the_environment(monkeypatch):
    monkeypatch.setattr(intentwatch.sdk.delivery, "KafkaProducer", FakeProducer)
    monkeypatch.setenv("INTENTWATCH_BOOTSTRAP", "10.0.0.7:9092")
    assert TelemetryPublisher().bootstrap == "10.0.0.7:9092"
    monkeypatch.delenv("INTENTWATCH_BOOTSTRAP")
    assert TelemetryPublisher().bootstrap == "127.0.0.1:9092"


def test_toolcall_is_completed_keyed_by_agent_and_valid(publisher):
    call = publisher.publish_toolcall({"agent_id": AGENT, "task_id": "t1", "tool": "crm.lookup"})
    [record] = sent(publisher, "toolcall")
    assert record.key == AGENT
    decoded = decode_toolcall(record.value)
    assert decoded.event_id == call.event_id and abs(decoded.ts - time.time()) < 5
    assert record.timestamp_ms == round(decoded.ts * 1000)


def test_records_are_timestamped_with_their_event_time(publisher):
    publisher.publish_task_event({"agent_id": AGENT, "task_id": "t1", "status": "started",
                                  "ts": "2026-11-02T08:00:00Z"})
    publisher.publish_grant(grant_payload())
    assert [r.timestamp_ms for r in publisher.delivery._producer.sent] == [
        1_793_606_400_000, grant_payload()["issued_at"] * 1000]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task_id": "t1", "tool": "crm.lookup"}, "`agent_id`"),
        ({"agent_id": "acme/a1", "task_id": "t1", "tool": "crm.lookup"}, "SPIFFE ID"),
        ({"agent_id": AGENT, "task_id": "t1"}, "`tool`"),
        ({"agent_id": AGENT, "task_id": "t1", "tool": "x", "bytes_out": -1}, "bytes_out"),
        ({"agent_id": AGENT, "task_id": "t1", "tool": "x", "outcome": "maybe"}, "outcome"),
        ({"agent_id": AGENT, "task_id": "t1", "tool": "x", "args": {"when": object()}}, "object"),
    ],
)
def test_bad_toolcall_fails_at_the_call_site_and_sends_nothing(publisher, fields, message):
    with pytest.raises(ContractError, match=message):
        publisher.publish_toolcall(fields)
    assert publisher.delivery._producer.sent == []


def test_grant_jws_is_sent_as_is_under_its_agent(publisher):
    key = generate_key("EdDSA")
    token = key.sign(json.dumps(grant_payload()).encode(), typ="intentwatch-grant+jwt")
    assert publisher.publish_grant(token).task_id == "t1"
    [record] = sent(publisher, "grant")
    assert (record.key, record.value) == (AGENT, token.encode())


def test_plain_grant_payload_is_sent_as_json(publisher):
    publisher.publish_grant(grant_payload())
    [record] = sent(publisher, "grant")
    assert json.loads(record.value)["credential_ids"] == ["c1"]


@pytest.mark.parametrize(
    ("grant", "message"),
    [
        ("not-a-jws", "compact JWS"),
        ("e30.!!!.sig", "base64url"),
        (forge.unsecured({"grant_id": "g1"}), "`agent_id`"),
        ({**grant_payload(), "expires_at": 0}, "expires_at"),
    ],
)
def test_bad_grant_fails_at_the_call_site(publisher, grant, message):
    with pytest.raises(ContractError, match=message):
        publisher.publish_grant(grant)
    assert publisher.delivery._producer.sent == []


def test_flush_reports_records_kafka_did_not_take(publisher):
    publisher.publish_toolcall({"agent_id": AGENT, "task_id": "t1", "tool": "crm.lookup"})
    publisher.delivery._producer.futures[0].fail(RuntimeError("broker gone"))
    with pytest.raises(PublishError, match="broker gone"):
        publisher.flush()
    publisher.flush()  # reported once


# -- instrumentation -------------------------------------------------------------------------


def test_decorated_tool_publishes_target_outcome_and_sizes(publisher):
    @publisher.instrument("crm.lookup_customer", action="read", target_arg="customer_id",
                          data_labels=("internal", "pii"))
    def lookup_customer(customer_id: str, verbose: bool = False) -> dict:
        return {"id": customer_id, "name": "Jane"}

    with publisher.task("t1", agent_id=AGENT, credential_id="c1"):
        assert lookup_customer("c-17") == {"id": "c-17", "name": "Jane"}

    [started, completed] = [decode_task_event(r.value) for r in sent(publisher, "task")]
    assert (started.status, completed.status) == ("started", "completed")
    [call] = [decode_toolcall(r.value) for r in sent(publisher, "toolcall")]
    assert (call.agent_id, call.task_id, call.credential_id) == (AGENT, "t1", "c1")
    assert (call.tool, call.action, call.target, call.outcome) == (
        "crm.lookup_customer", "read", "c-17", "ok")
    assert call.data_labels == ["internal", "pii"]
    assert call.bytes_in == len(json.dumps({"id": "c-17", "name": "Jane"}))
    assert call.bytes_out > 0


def test_decorated_tool_error_is_published_and_raised(publisher):
    @publisher.instrument("crm.delete_customer", target_arg="customer_id")
    def delete_customer(customer_id: str) -> None:
        raise TimeoutError("crm did not answer")

    with pytest.raises(TimeoutError), publisher.task("t1", agent_id=AGENT):
        delete_customer("c-17")

    [call] = [decode_toolcall(r.value) for r in sent(publisher, "toolcall")]
    assert call.outcome == "error"
    assert decode_task_event(sent(publisher, "task")[-1].value).status == "failed"


def test_decorated_tool_without_a_task_does_not_run(publisher):
    ran = []

    @publisher.instrument("crm.lookup_customer")
    def lookup_customer(customer_id: str) -> None:
        ran.append(customer_id)

    with pytest.raises(ContractError, match="`agent_id`"):
        lookup_customer("c-17")
    assert ran == [] and publisher.delivery._producer.sent == []


def test_target_arg_must_exist(publisher):
    with pytest.raises(ValueError, match="no argument 'customer'"):
        publisher.instrument("crm.lookup", target_arg="customer")(lambda customer_id: None)


def test_async_tools_are_instrumented(publisher):
    @publisher.instrument("web.fetch", target_arg="url")
    async def fetch(url: str) -> bytes:
        return b"<html></html>"

    async def agent():
        with publisher.task("t2", agent_id=AGENT, events=False):
            return await fetch("https://docs.acme.org/")

    assert asyncio.run(agent()) == b"<html></html>"
    [call] = [decode_toolcall(r.value) for r in sent(publisher, "toolcall")]
    assert (call.task_id, call.target, call.bytes_in) == ("t2", "https://docs.acme.org/", 13)


def test_tool_call_block_records_duration_and_explicit_outcome(publisher):
    with publisher.tool_call("gmail.send_email", agent_id=AGENT, task_id="t1",
                             target="mailto:jane@acme.org") as call:
        time.sleep(0.01)
        call.bytes_out = 512
    assert call.duration >= 0.01 and call.published.outcome == "ok"

    with pytest.raises(PermissionError), publisher.tool_call(
        "gmail.send_email", agent_id=AGENT, task_id="t1"
    ) as call:
        call.outcome = "denied"
        raise PermissionError("policy")
    outcomes = [decode_toolcall(r.value).outcome for r in sent(publisher, "toolcall")]
    assert outcomes == ["ok", "denied"]


# -- subscribing -----------------------------------------------------------------------------

ISSUER, AUDIENCE = "urn:intentwatch", "urn:intentwatch:credential-brokers"


def revocation(**changes) -> Revocation:
    fields = {
        "revocation_id": "rev-1", "agent_id": AGENT, "task_id": "t1", "credential_ids": ["c1"],
        "reason_code": "intent_violation", "reason": "mail outside acme.org", "score": 1.0,
        "evidence": ["e7"], "event_ts": 1_793_606_400.0,
    }
    return Revocation(**(fields | changes))


def signed(key, **changes) -> str:
    return encode_revocation(
        revocation(**changes), key, issuer=ISSUER, audience=AUDIENCE, issued_at=time.time()
    ).token


def record(token: str | bytes, agent: str = AGENT, offset: int = 0):
    value = token.encode() if isinstance(token, str) else token
    return SimpleNamespace(topic=TOPICS["revocations"], partition=0, offset=offset,
                           key=agent.encode(), value=value)


@pytest.fixture
def key():
    return generate_key("ES256")


@pytest.fixture
def subscriber(monkeypatch, key):
    monkeypatch.setattr(intentwatch.sdk.subscriber, "KafkaConsumer", FakeConsumer)
    rejected = []
    subscriber = RevocationSubscriber(
        "kafka.invalid:9092", jwks={"keys": [key.public_jwk()]}, audience=AUDIENCE,
        on_rejected=rejected.append,
    )
    subscriber.rejections = rejected
    return subscriber


def deliver(*records):
    FakeConsumer.records = list(records)


def test_subscriber_delivers_verified_revocations_once(subscriber, key):
    token = signed(key)
    deliver(record(token, offset=0), record(token, offset=1))
    [revocation_] = subscriber.poll(0)
    assert (revocation_.revocation_id, revocation_.credential_ids) == ("rev-1", ["c1"])
    assert (subscriber.accepted, subscriber.duplicates) == (1, 1)
    deliver(record(token, offset=2))  # replayed later: still a duplicate
    assert subscriber.poll(0) == [] and subscriber.duplicates == 2


def test_subscriber_drops_and_reports_forgeries(subscriber, key, caplog):
    genuine = signed(key)
    _, payload, _ = forge.segments(genuine)
    tampered = forge.with_payload(genuine, {**json.loads(payload), "txn": "t9"})
    impostor = generate_key("ES256")
    other_kid = signed(impostor, revocation_id="rev-2")
    same_kid = forge.with_header(signed(impostor, revocation_id="rev-3"), kid=key.kid)
    deliver(*(record(t, offset=i) for i, t in enumerate(
        [tampered, other_kid, same_kid, forge.unsecured({"jti": "rev-4"}), b"\xff garbage"])))

    assert subscriber.poll(0) == []
    assert subscriber.rejected == {"bad_signature": 2, "unknown_kid": 1, "alg_not_allowed": 1,
                                   "malformed": 1}
    assert [r.offset for r in subscriber.rejections] == [0, 1, 2, 3, 4]
    assert genuine.split(".")[2] not in caplog.text  # tokens are never logged
    deliver(record(genuine, offset=5))
    assert [r.revocation_id for r in subscriber.poll(0)] == ["rev-1"]


def test_subscriber_keeps_only_its_agents(monkeypatch, key):
    monkeypatch.setattr(intentwatch.sdk.subscriber, "KafkaConsumer", FakeConsumer)
    subscriber = RevocationSubscriber("kafka.invalid:9092", jwks={"keys": [key.public_jwk()]},
                                      agents={OTHER})
    deliver(record(signed(key)), record(signed(key, revocation_id="r2", agent_id=OTHER), OTHER))
    assert [r.agent_id for r in subscriber.poll(0)] == [OTHER]


def test_subscriber_run_calls_back_from_a_thread(subscriber, key):
    received = []
    deliver(record(signed(key)))
    subscriber.run(received.append)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    subscriber.close()
    assert [r.revocation_id for r in received] == ["rev-1"]
    assert subscriber._consumer.closed


# -- reference broker and gateway ------------------------------------------------------------


@pytest.fixture
def broker(publisher):
    return CredentialBroker(publisher, ttl=60)


@pytest.fixture
def gateway(broker, publisher):
    gateway = ToolGateway(broker, publisher, on_call=lambda call: gateway.calls.append(call))
    gateway.calls, gateway.ran = [], []

    @gateway.tool("crm.lookup_customer", action="read", target_arg="customer_id",
                  data_labels=lambda args: ["pii"] if args["customer_id"].startswith("c-") else [])
    def lookup_customer(customer_id: str) -> dict:
        gateway.ran.append(customer_id)
        return {"id": customer_id}

    return gateway


def issue(broker, task_id="t1", **changes):
    grant = {"intent": "answer ticket 42", "tools": ["crm.*"], "targets": ["*"],
             "data_labels": ["internal", "pii"]}
    return broker.issue(AGENT, task_id, **(grant | changes))


def test_broker_publishes_a_grant_signed_with_its_key(broker, publisher):
    from intentwatch.tokens.grants import GrantVerifier

    credential = issue(broker)
    [record_] = sent(publisher, "grant")
    grant = GrantVerifier(broker.jwks()).verify(record_.value, AGENT)
    assert grant.credential_ids == [credential.credential_id] and grant.task_id == "t1"
    assert credential.token not in repr(credential) and credential.token.encode() not in (
        record_.value)


def test_gateway_runs_valid_calls_and_publishes_them(broker, gateway, publisher):
    credential = issue(broker)
    assert gateway.call(credential.token, "crm.lookup_customer", customer_id="c-17") == {
        "id": "c-17"}
    [call] = [decode_toolcall(r.value) for r in sent(publisher, "toolcall")]
    assert (call.credential_id, call.target, call.outcome, call.data_labels) == (
        credential.credential_id, "c-17", "ok", ["pii"])
    assert [(c.status, c.outcome) for c in gateway.calls] == [("valid", "ok")]


def test_gateway_denies_revoked_calls_without_running_them(broker, gateway, publisher):
    credential, other = issue(broker), issue(broker, "t2")
    revoked = broker.revoke(revocation(task_id="t1", credential_ids=[]))
    assert revoked == [credential.credential_id]

    with pytest.raises(AccessDenied, match="revoked \\(intent_violation") as denied:
        gateway.call(credential.token, "crm.lookup_customer", customer_id="c-17")
    assert denied.value.status == "revoked" and gateway.ran == []
    gateway.call(other.token, "crm.lookup_customer", customer_id="c-18")  # other task unaffected
    outcomes = [decode_toolcall(r.value).outcome for r in sent(publisher, "toolcall")]
    assert outcomes == ["denied", "ok"]
    assert broker.revoked(credential.credential_id).received_at <= time.time()


def test_gateway_denies_expired_and_unknown_tokens(broker, gateway, publisher):
    expired = issue(broker, ttl=0.001)
    time.sleep(0.01)
    with pytest.raises(AccessDenied, match="expired at"):
        gateway.call(expired.token, "crm.lookup_customer", customer_id="c-17")
    with pytest.raises(AccessDenied, match="not one the broker issued"):
        gateway.call("stolen-or-made-up", "crm.lookup_customer", customer_id="c-17")
    assert gateway.ran == []
    assert [c.status for c in gateway.calls] == ["expired", "unknown"]
    assert len(sent(publisher, "toolcall")) == 1  # an unknown token has no agent to report


# -- Kafka trouble ---------------------------------------------------------------------------


def test_a_bad_address_is_one_error_naming_it_with_a_hint(key):
    message = r"Kafka address '127.0.0.1:9092x' is not host:port .*: set INTENTWATCH_BOOTSTRAP"
    with pytest.raises(IntentwatchError, match=message):
        TelemetryPublisher("127.0.0.1:9092x")
    with pytest.raises(IntentwatchError, match=message):
        RevocationSubscriber("127.0.0.1:9092x", jwks={"keys": [key.public_jwk()]})


def test_no_kafka_is_a_publish_error_within_the_timeout(key):
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(PublishError, match=r"no answer within 0\.5 s.*intentwatch kafka up"):
        TelemetryPublisher(nobody, timeout=0.5)
    with pytest.raises(IntentwatchError, match=r"no answer within 0\.5 s"):
        RevocationSubscriber(nobody, jwks={"keys": [key.public_jwk()]}, ready_timeout=0.5)


def test_the_policy_is_one_of_two():
    with pytest.raises(ValueError, match="fail_closed"):
        TelemetryPublisher("127.0.0.1:9092", policy="fail_later")
