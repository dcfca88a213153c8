"""A worker that stops and starts again keeps what it learned (real broker, real processes).

The first worker learns a completed task of each of three agents (of a role of their
own) and is stopped by SIGTERM; a second one in the same consumer group, with a fresh
data dir (nothing is kept on disk), takes each agent's learned state and its
partition's population state from the ``learned`` table's changelog: a probe call of
each agent shows the same learned history (``history_*`` components) before the stop
and after the restart, whether the tables are written after every record or after
every 200 (``INTENTWATCH_FLUSH_RECORDS``: what was not written is read again).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka

HISTORY = ("history_agent_calls", "history_role_calls", "history_role_tasks")
"""What the agent and its role taught (the fleet's may move with other tests' agents)."""


@pytest.mark.parametrize("flush_records", ["1", "200"])
def test_a_restarted_worker_resumes_from_what_it_learned(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path, flush_records: str
) -> None:
    role = f"spiffe://acme.org/agents/restart-{uuid.uuid4().hex[:8]}"
    agents = [f"{role}/agent-{i}" for i in range(3)]
    app_id = f"iw-restart-{uuid.uuid4().hex[:8]}"
    quick = {"INTENTWATCH_POPULATION_SECONDS": "0", "INTENTWATCH_FLUSH_RECORDS": flush_records}

    def probe(worker: RunningWorker, agent: str, task: str) -> dict[str, Any]:
        """The verdict of a call of a new task of ``agent``."""
        worker.publisher.publish_grant(worker.grant(agent, task))
        event_id = worker.publisher.publish_toolcall({
            "agent_id": agent, "task_id": task, "tool": "crm.lookup_customer",
            "credential_id": f"c-{agent.rsplit('/', 1)[1]}-{task}", "target": "crm://c-41",
            "data_labels": ["internal"],
        }).event_id
        worker.publisher.flush()
        found = wait_for(lambda: [v for r in worker.topics["verdicts"].now(agent)
                                  if (v := json.loads(r.value))["event_id"] == event_id],
                         bool, 60, f"the verdict of {event_id}")
        return {name: found[0]["components"][name] for name in HISTORY}

    (tmp_path / "first").mkdir()
    first = RunningWorker(kafka_bootstrap, tmp_path / "first", issuer_key, app_id=app_id,
                          settings=quick)
    try:
        sdk = first.publisher
        for agent in agents:
            sdk.publish_grant(first.grant(agent))
            for n in range(4):
                sdk.publish_toolcall({
                    "agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
                    "credential_id": f"c-{agent.rsplit('/', 1)[1]}-t1",
                    "target": f"crm://c-4{n}", "data_labels": ["internal"],
                })
            sdk.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "completed"})
        sdk.flush()
        first.topics["audit"].of(agents[-1], 1, timeout=120)
        before = {agent: probe(first, agent, "before") for agent in agents}
    finally:
        first.close()
        first.stop()
    assert first.process.returncode == 0
    assert all(history["history_agent_calls"] >= 3.9 for history in before.values())

    (tmp_path / "second").mkdir()
    second = RunningWorker(kafka_bootstrap, tmp_path / "second", issuer_key, app_id=app_id,
                           settings={"INTENTWATCH_FLUSH_RECORDS": flush_records})
    try:
        after = {agent: probe(second, agent, "after") for agent in agents}
        status = second.status()["learned"]
        assert after == before
        assert status["restored_agents"] >= len(agents)
        assert status["history"]["by_role"][role]["tasks"] == len(agents)
    finally:
        second.close()
        second.stop()
    print(f"\nrestart: {status['restored_agents']} agents restored, "
          f"{status['restored_calls']} calls in the partitions' population state")
