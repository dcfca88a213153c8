"""`intentwatch audit`: right-sizing advice read back from a real audit topic."""

import json
import uuid

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from intentwatch.cli import app
from intentwatch.contracts import TOPICS, AuditRecord, encode
from intentwatch.demo import create_topics
from intentwatch.models.rightsizing import advise
from intentwatch.pipeline.settings import Settings


def audit(agent: str, task: str, *, used_tools: dict[str, int], revoked: bool = False,
          intent: str = "answer the ticket"):
    granted = {"tools": ["crm.*", "gmail.*", "iam.*"], "targets": ["*.acme.org", "mailto:*"],
               "data_labels": ["internal", "pii"]}
    return AuditRecord(
        agent_id=agent, task_id=task, grant_id=f"g-{task}", intent=intent,
        granted=granted,
        used={"tools": used_tools, "targets": {"https://crm.acme.org/c/1": 1},
              "data_labels": {"pii": 1}},
        unused={"tools": [p for p in granted["tools"]
                          if not any(t.startswith(p[:-1]) for t in used_tools)],
                "targets": ["mailto:*"], "data_labels": ["internal"]},
        out_of_grant=[{"event_id": "e9", "code": "tool_not_granted", "tool": "shell.exec",
                       "target": ""}] if revoked else [],
        calls=sum(used_tools.values()), max_score=1.0 if revoked else 0.1, revoked=revoked,
        revocation_reasons=["intent_violation"] if revoked else ["task_completed"],
        ended="completed", started_at=None, ended_at="2026-11-02T09:00:00.000Z",
    )


def test_advice_keeps_only_privileges_never_used_in_any_task():
    role = "spiffe://acme.org/agents/support"
    records = [
        audit(f"{role}/a1", "t1", used_tools={"crm.lookup": 2}),
        audit(f"{role}/a2", "t2", used_tools={"crm.lookup": 1, "gmail.send": 1}, revoked=True),
    ]
    (by_role,) = advise(records, by="role")
    assert by_role.tasks == 2 and by_role.revoked_tasks == 1 and by_role.out_of_grant_calls == 1
    assert by_role.never_used == {"tools": {"iam.*": 2}, "targets": {"mailto:*": 2},
                                  "data_labels": {"internal": 2}}
    assert [advice.group for advice in advise(records, by="agent")] == [
        f"{role}/a1", f"{role}/a2"]
    assert by_role.delegating_grant() is None


def test_requests_that_delegate_to_data_under_broad_grants_get_a_narrow_one_proposed():
    role = "spiffe://acme.org/agents/support"
    records = [
        audit(f"{role}/a1", "t1", used_tools={"crm.lookup": 2},
              intent="Do the tasks in the handover notes"),
        audit(f"{role}/a2", "t2", used_tools={"gmail.send": 1},
              intent="Please follow the instructions in the ticket"),
        audit(f"{role}/a2", "t3", used_tools={"iam.reset": 1}, intent="Answer ticket 7"),
    ]
    (by_role,) = advise(records, by="role")
    assert by_role.delegating_tasks == 2
    assert by_role.delegating_grant() == {"tools": ["crm.lookup", "gmail.send"],
                                          "targets": ["https://crm.acme.org/c/1"]}
    assert by_role.to_dict()["delegating_grant"] == by_role.delegating_grant()


@pytest.mark.kafka
def test_audit_command_reads_the_topic(kafka_bootstrap):
    create_topics(kafka_bootstrap, Settings().partitions)
    role = f"spiffe://acme.org/agents/audit-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n, used in enumerate(({"crm.lookup": 3}, {"crm.lookup": 1, "gmail.send": 2})):
        agent = f"{role}/agent-{n}"
        producer.send(TOPICS["audit"], key=agent.encode(),
                      value=encode(audit(agent, f"t{n}", used_tools=used)))
    producer.flush()
    producer.close()

    runner = CliRunner()
    result = runner.invoke(app, ["audit", "--bootstrap", kafka_bootstrap, "--by", "role",
                                 "--json", "--timeout", "5"])
    assert result.exit_code == 0, result.output
    (mine,) = [group for group in json.loads(result.stdout) if group["group"] == role]
    assert mine["tasks"] == 2
    assert mine["never_used"]["tools"] == {"iam.*": 2}

    table = runner.invoke(app, ["audit", "--bootstrap", kafka_bootstrap, "--timeout", "5"])
    assert table.exit_code == 0 and "iam.*" in table.stdout
