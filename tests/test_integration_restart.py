"""A worker that stops and starts again keeps what it learned (real broker, real processes).

The first worker learns a completed task and is stopped by SIGTERM; a second one in the
same consumer group with the same data dir starts from its snapshot instead of cold.
Other tests share the broker and the input topic, so the first worker may learn their
tasks too, up to its last moment: the snapshot it leaves holds at least what it had
learned when last asked.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from intentwatch.pipeline.snapshots import FILE_NAME
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka


def test_a_restarted_worker_resumes_from_what_it_learned(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    agent = f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:10]}"
    app_id = f"iw-restart-{uuid.uuid4().hex[:8]}"
    first = RunningWorker(kafka_bootstrap, tmp_path, issuer_key, app_id=app_id)
    try:
        sdk = first.publisher
        sdk.publish_grant(first.grant(agent))
        for _ in range(4):
            sdk.publish_toolcall({
                "agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
                "credential_id": f"c-{agent.rsplit('/', 1)[1]}-t1", "target": "crm://c-42",
                "data_labels": ["internal"],
            })
        sdk.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "completed"})
        sdk.flush()
        wait_for(lambda: first.status()["learned"]["learned_calls"],
                 lambda calls: calls >= 4, 60, "the completed task to be learned")
        learned = first.status()["learned"]["learned_calls"]
    finally:
        first.close()
        first.stop()
    assert first.process.returncode == 0
    assert (tmp_path / "data" / FILE_NAME).exists()

    second = RunningWorker(kafka_bootstrap, tmp_path, issuer_key, app_id=app_id)
    try:
        assert second.status()["learned"]["restored_calls"] >= learned >= 4
    finally:
        second.close()
        second.stop()
