"""`intentwatch explain` and `intentwatch tail` against the real broker and a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intentwatch.cli import app
from tests.conftest import RunningWorker

pytestmark = pytest.mark.kafka

INTENTWATCH = str(Path(sys.executable).with_name("intentwatch"))


def publish_task(worker: RunningWorker, agent: str) -> tuple[str, str]:
    """A task with one call in its grant, one outside it, then its end; the two event ids."""
    publisher = worker.publisher
    publisher.publish_grant(worker.grant(agent))
    credential = f"c-{agent.rsplit('/', 1)[1]}-t1"
    good = publisher.publish_toolcall({
        "agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
        "target": "crm://c-42", "credential_id": credential, "data_labels": ["internal"]})
    bad = publisher.publish_toolcall({
        "agent_id": agent, "task_id": "t1", "tool": "iam.update_user_password",
        "target": "crm://c-42", "credential_id": credential})
    publisher.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "completed"})
    publisher.flush()
    return good.event_id, bad.event_id


def test_explain_shows_a_tasks_verdicts_revocations_and_audit(
    worker: RunningWorker, agent: str
) -> None:
    good, bad = publish_task(worker, agent)
    worker.topics["audit"].of(agent)  # the worker has judged the whole task
    runner = CliRunner()
    base = ["--bootstrap", worker.bootstrap, "--jwks", worker.jwks_url]
    result = runner.invoke(app, ["explain", "--task", "t1", "--agent", agent, "--json", *base])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [(v["event_id"], v["decision"]) for v in found["verdicts"]] == [
        (good, "allow"), (bad, "revoke")]
    assert found["verdicts"][1]["reasons"][0]["code"] == "tool_not_granted"
    assert found["verdicts"][0]["components"]
    by_reason = {r["reason_code"]: r for r in found["revocations"]}
    assert set(by_reason) == {"intent_violation", "task_completed"}
    assert by_reason["intent_violation"]["evidence"] == [bad]
    [audit] = found["audits"]
    assert (audit["calls"], audit["revoked"]) == (2, True)

    one = runner.invoke(app, ["explain", bad, *base], env={"COLUMNS": "250"})
    assert one.exit_code == 0, one.output
    assert bad in one.output and "tool_not_granted" in one.output
    assert good not in one.output  # only that call's verdict, with its task's revocations
    assert "intent_violation" in one.output and "audit (completed" in one.output


def test_explain_of_an_unknown_call_says_so(worker: RunningWorker) -> None:
    result = CliRunner().invoke(app, ["explain", "no-such-event", "--bootstrap",
                                      worker.bootstrap, "--jwks", worker.jwks_url])
    assert result.exit_code == 2
    assert "nothing on the topics" in result.stderr and "no-such-event" in result.stderr


def test_tail_follows_verdicts_and_revocations_with_filters(
    worker: RunningWorker, agent: str
) -> None:
    tail = subprocess.Popen(
        [INTENTWATCH, "tail", "--decision", "revoke", "--reason", "tool_not_granted",
         "--reason", "intent_violation", "--agent", agent, "--count", "2",
         "--from-beginning", "--bootstrap", worker.bootstrap, "--jwks", worker.jwks_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, bad = publish_task(worker, agent)
        out, err = tail.communicate(timeout=120)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    verdict, revocation = sorted(out.splitlines(), key=lambda line: "REVOKED" in line)
    assert " verdict revoke " in verdict and bad in verdict and "tool_not_granted" in verdict
    assert f" REVOKED intent_violation {agent} task t1 " in revocation
