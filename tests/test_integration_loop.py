"""The whole loop on a real broker: SDK → worker process → verdicts, revocations, dead letters.

Issue 2 §8: (a) conforming calls are allowed and not revoked; (b) calls outside the
grant's tools, targets or labels, after expiry, or with another task's credential are
revoked with the right reason; (c) a call that arrives before its grant is judged
against it; (d) malformed records become dead letters and the records around them
are processed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from intentwatch.contracts import KIND_HEADER, TOPICS, DeadLetterHeaders, encode

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    """A raw producer, for records the SDK would refuse to send."""
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    yield raw
    raw.close()


def call(agent: str, task: str = "t1", **fields: Any) -> dict[str, Any]:
    """A tool call the grant of :meth:`RunningWorker.grant` allows, unless ``fields`` say else."""
    return {
        "agent_id": agent, "task_id": task, "tool": "crm.lookup_customer",
        "credential_id": f"c-{agent.rsplit('/', 1)[1]}-{task}", "target": "crm://c-42",
        "data_labels": ["internal"], **fields,
    }


def verdicts(worker: Any, agent: str, count: int) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in worker.topics["verdicts"].of(agent, count)]


def test_conforming_calls_are_allowed_and_not_revoked(worker: Any, agent: str) -> None:
    sdk = worker.publisher
    sdk.publish_grant(worker.grant(agent))
    sdk.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "started"})
    sdk.publish_toolcall(call(agent))
    sdk.publish_toolcall(call(agent, tool="crm.read_ticket", target="crm://tickets/42"))
    sdk.publish_toolcall(call(agent, target="https://crm.acme.org/customers/c-42"))
    sdk.flush()

    assert [v["decision"] for v in verdicts(worker, agent, 3)] == ["allow"] * 3
    # The task's end revokes its credentials; a violation revocation would have come first.
    sdk.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "completed"})
    sdk.flush()
    assert worker.revocations(agent)[0].reason_code == "task_completed"


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"tool": "iam.update_user_password"}, "tool_not_granted"),
        ({"target": "https://exfil.example/upload"}, "target_not_granted"),
        ({"data_labels": ["restricted"]}, "label_not_granted"),
    ],
    ids=["tool", "target", "label"],
)
def test_call_outside_the_grant_is_revoked(
    worker: Any, agent: str, fields: dict[str, Any], violation: str
) -> None:
    worker.publisher.publish_grant(worker.grant(agent))
    offending = worker.publisher.publish_toolcall(call(agent, **fields))
    worker.publisher.flush()

    [revocation] = worker.revocations(agent)
    assert revocation.reason_code == "intent_violation"
    assert revocation.evidence == [offending.event_id]
    assert offending.credential_id in revocation.credential_ids
    [verdict] = verdicts(worker, agent, 1)
    assert verdict["decision"] == "revoke" and verdict["reasons"][0]["code"] == violation


def test_credential_of_another_task_is_revoked_as_reuse(worker: Any, agent: str) -> None:
    worker.publisher.publish_grant(worker.grant(agent, "t1"))
    worker.publisher.publish_grant(worker.grant(agent, "t2"))
    t1_credential = call(agent, "t1")["credential_id"]
    worker.publisher.publish_toolcall(call(agent, "t2", credential_id=t1_credential))
    worker.publisher.flush()

    [revocation] = worker.revocations(agent)
    assert (revocation.task_id, revocation.reason_code) == ("t2", "credential_reuse")
    assert t1_credential in revocation.credential_ids


def test_call_after_expiry_is_revoked(worker: Any, agent: str) -> None:
    worker.publisher.publish_grant(worker.grant(agent, ttl=2.0))
    worker.publisher.flush()
    assert worker.revocations(agent)[0].reason_code == "ttl_expired"

    worker.publisher.publish_toolcall(call(agent))
    worker.publisher.flush()
    late = worker.revocations(agent, 2)[1]
    assert late.reason_code == "credential_reuse"
    assert verdicts(worker, agent, 1)[0]["reasons"][0]["code"] == "call_after_task_end"


def test_call_before_its_grant_is_judged_against_the_grant(worker: Any, agent: str) -> None:
    grant = worker.grant(agent)  # issued before the call, published just after it
    early = worker.publisher.publish_toolcall(call(agent))
    worker.publisher.publish_grant(grant)
    worker.publisher.flush()

    [verdict] = verdicts(worker, agent, 1)
    assert (verdict["event_id"], verdict["decision"]) == (early.event_id, "allow")


def test_call_whose_grant_never_comes_is_judged_as_no_grant(worker: Any, agent: str) -> None:
    worker.publisher.publish_toolcall(call(agent))
    worker.publisher.flush()

    [verdict] = verdicts(worker, agent, 1)
    assert verdict["decision"] == "revoke" and verdict["reasons"][0]["code"] == "no_grant"
    assert worker.revocations(agent)[0].reason_code == "policy"


def test_malformed_records_are_dead_letters_and_the_rest_is_processed(
    worker: Any, agent: str, producer: KafkaProducer
) -> None:
    worker.publisher.publish_grant(worker.grant(agent))
    worker.publisher.flush()
    now = time.time()
    good = [encode({**call(agent), "event_id": f"good-{n}", "ts": now + n}) for n in range(3)]
    missing_tool = {key: value for key, value in call(agent).items() if key != "tool"}
    bad = {  # value -> (reason, what the message must name)
        b'{"event_id": "e1", "ts": ': ("ContractError", "not valid JSON"),
        encode({**missing_tool, "event_id": "e2", "ts": now}): ("ContractError", "`tool`"),
        encode({**call(agent), "event_id": "e3", "ts": "yesterday"}): ("ContractError", "`$.ts`"),
        encode({"event_id": "e4", "ts": now, "agent_id": agent}): ("ContractError", "`task_id`"),
        b"not-a-jws": ("malformed", "compact JWS"),
    }
    bad_calls = list(bad)[:3]
    records = [
        ("toolcall", good[0]),
        ("toolcall", bad_calls[0]),
        ("toolcall", good[1]),
        ("toolcall", bad_calls[1]),
        ("toolcall", bad_calls[2]),
        ("task", list(bad)[3]),
        ("grant", list(bad)[4]),
        ("toolcall", good[2]),
    ]
    sent = [producer.send(TOPICS["events"], key=agent.encode(), value=value,
                          headers=[(KIND_HEADER, kind.encode())]) for kind, value in records]
    sources = {value: future.get(timeout=30) for (_, value), future in zip(records, sent,
                                                                            strict=True)}

    assert [v["event_id"] for v in verdicts(worker, agent, 3)] == ["good-0", "good-1", "good-2"]
    letters = worker.topics["dlq"].of(agent, len(bad))
    assert sorted(letter.value for letter in letters) == sorted(bad)
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers}
        source = sources[letter.value]
        assert headers[DeadLetterHeaders.SOURCE_TOPIC] == source.topic
        assert int(headers[DeadLetterHeaders.SOURCE_PARTITION]) == source.partition
        assert int(headers[DeadLetterHeaders.SOURCE_OFFSET]) == source.offset
        reason, named = bad[letter.value]
        assert headers[DeadLetterHeaders.ERROR_CLASS] == reason
        assert named in headers[DeadLetterHeaders.ERROR_MESSAGE]
