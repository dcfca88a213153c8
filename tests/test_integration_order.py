"""One order per agent (real broker, real worker, the real SDK).

An agent's SDK session publishes its calls and then the task's end back to back; the
credential broker's grant shares the agent's log. The worker judges them in that
order: the audit counts every call and lists the tool used as used, and the calls are
learned because the task ended cleanly: the agent's next task is judged against how
often the first one called the tool (new to the fleet, so nothing else teaches it).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from intentwatch import TelemetryPublisher
from tests.conftest import RunningWorker

pytestmark = pytest.mark.kafka

CALLS = 12


def test_calls_then_the_end_back_to_back_are_audited_and_learned_in_order(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    agent = f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:10]}"
    tool = f"crm.lookup_{uuid.uuid4().hex[:8]}"  # new to the whole fleet
    worker = RunningWorker(kafka_bootstrap, tmp_path, issuer_key)
    try:
        sdk = TelemetryPublisher(kafka_bootstrap, agent_id=agent)

        @sdk.instrument(tool, action="read", target_arg="customer", data_labels=("internal",))
        def lookup(customer: str) -> dict[str, str]:
            return {"id": customer}

        for task in ("t1", "t2"):
            sdk.publish_grant(worker.grant(agent, task))
            with sdk.task(task, credential_id=f"c-{agent.rsplit('/', 1)[1]}-{task}"):
                for n in range(CALLS):
                    lookup(f"crm://c-{n % 3}")
        sdk.close()

        audits = {a["task_id"]: a for a in
                  (json.loads(r.value) for r in worker.topics["audit"].of(agent, 2))}
        for audit in audits.values():
            assert audit["calls"] == CALLS
            assert audit["used"]["tools"] == {tool: CALLS}
            assert audit["unused"]["tools"] == []
            assert (audit["ended"], audit["revoked"], audit["out_of_grant"]) == (
                "completed", False, [])
        verdicts = [json.loads(r.value) for r in worker.topics["verdicts"].of(agent, 2 * CALLS)]
        assert [v["decision"] for v in verdicts] == ["allow"] * 2 * CALLS
        assert [v["task_id"] for v in verdicts] == ["t1"] * CALLS + ["t2"] * CALLS
        # nothing is known of the tool while t1 runs; t2 is judged by what t1 taught
        assert all(v["components"].get("tool_repeats", 0.0) == 0.0 for v in verdicts[:CALLS])
        assert verdicts[-1]["components"]["tool_repeats"] > 0.0
    finally:
        worker.close()
        worker.stop()
