"""Ended is ended across restarts (real broker, real worker processes, SIGKILL).

A task ends and is audited; the worker is killed with SIGKILL once its offsets are
committed and a new worker takes over its group and tables. Its grant is not
expired or audited again when stream time passes its expiry, and its credential
presented afterwards is refused as used after the task's end.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from intentwatch.contracts import KIND_HEADER, TOPICS, encode
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka


def committed(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offsets on the input topic, by partition."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == TOPICS["events"]}


def test_an_ended_task_is_not_expired_again_and_its_credential_stays_refused(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    agent = f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:10]}"
    app_id = f"iw-ended-{uuid.uuid4().hex[:8]}"
    credential = f"c-{agent.rsplit('/', 1)[1]}-t1"
    first = RunningWorker(kafka_bootstrap, tmp_path, issuer_key, app_id=app_id)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        first.publisher.publish_grant(first.grant(agent, ttl=12.0))
        first.publisher.publish_toolcall({
            "agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
            "credential_id": credential, "target": "crm://c-42", "data_labels": ["internal"],
        })
        first.publisher.flush()
        value = encode({"event_id": str(uuid.uuid4()), "ts": time.time(), "agent_id": agent,
                        "task_id": "t1", "status": "completed"})
        end = producer.send(TOPICS["events"], key=agent.encode(), value=value,
                            headers=[(KIND_HEADER, b"task")]).get(timeout=30)
        [audit] = first.topics["audit"].of(agent)
        assert json.loads(audit.value)["ended"] == "completed"
        wait_for(lambda: committed(kafka_bootstrap, app_id).get(end.partition, -1),
                 lambda offset: offset > end.offset, 60, "the task's end to be committed")
    finally:
        first.close()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)

    second = RunningWorker(kafka_bootstrap, tmp_path, issuer_key, app_id=app_id)
    try:
        # a later task of the same agent, on the same partition, expiring after t1 did: its
        # ttl_expired revocation shows stream time there has passed t1's expiry
        second.publisher.publish_grant(second.grant(agent, "t2", ttl=14.0))
        second.publisher.publish_toolcall({
            "agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
            "credential_id": credential, "target": "crm://c-42", "data_labels": ["internal"],
        })
        second.publisher.flush()
        revocations = second.revocations(agent, 3, timeout=90)
        reasons = sorted((r.task_id, r.reason_code) for r in revocations)
        assert reasons == [("t1", "credential_reuse"), ("t1", "task_completed"),
                           ("t2", "ttl_expired")]
        verdicts = [json.loads(r.value) for r in second.topics["verdicts"].of(agent, 2)]
        assert verdicts[-1]["reasons"][0]["code"] == "call_after_task_end"
        audits = [json.loads(r.value) for r in second.topics["audit"].of(agent, 2)]
        assert sorted(a["task_id"] for a in audits) == ["t1", "t2"]  # t1 audited once
    finally:
        producer.close()
        second.close()
        second.stop()
