"""The demo: its plan varies with the seed, its board keeps revocations for cause apart,
and ``--keep`` leaves its broker for ``audit`` and a recording that replays."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from rich.console import Console
from typer.testing import CliRunner

from intentwatch.cli import app
from intentwatch.contracts import Revocation, format_ts
from intentwatch.demo import EVENTS_FILE, run_demo
from intentwatch.demo.plan import plan_fleet
from intentwatch.demo.render import render_live
from intentwatch.local.kafka_broker import down, free_port
from intentwatch.models.engine import Engine
from intentwatch.models.replay import replay
from intentwatch.simulation.fleet import read_jsonl

NOW = 1_800_000_000.0


def hijacks(seed: int) -> list[tuple[str, str | None]]:
    _, tasks = plan_fleet(seed, 1, 45.0, now=NOW)
    return [(task.agent_id, task.attack) for task in tasks if task.attack]


def test_the_seed_picks_the_fleet_and_its_hijacks() -> None:
    assert hijacks(3) == hijacks(3)
    assert len({tuple(hijacks(seed)) for seed in range(4)}) > 1


def test_history_ends_before_the_live_tasks_start() -> None:
    history, tasks = plan_fleet(5, 1, 45.0, now=NOW)
    assert history and tasks
    assert all(event.get("ts", event.get("issued_at")) < format_ts(NOW) for event in history)
    assert {task.agent_id for task in tasks} <= {event["agent_id"] for event in history}
    assert all(step.gap >= 0 for task in tasks for step in task.steps)


def revocation(code: str, task: str) -> Revocation:
    return Revocation(revocation_id=uuid.uuid4().hex, agent_id="spiffe://acme.org/agents/"
                      "support/agent-7", task_id=task, credential_ids=["c-1"], reason_code=code,
                      reason=f"why {task}", score=0.97, event_ts=NOW)


def test_the_live_board_shows_revocations_for_cause_apart_with_whole_task_ids() -> None:
    cut = "task-0123456789abcdef-fedcba"
    rows = [(NOW, revocation("task_completed", f"task-done-{n}")) for n in range(12)]
    rows.insert(5, (NOW, revocation("intent_violation", cut)))
    console = Console(record=True, width=60)
    console.print(render_live(rows, [], time.monotonic() + 10))
    text = console.export_text()
    assert cut in text and f"why {cut}" in text
    assert "Revoked for cause: 1" in text
    assert "Tasks ended normally: 12 (task_completed 12)" in text
    assert "task-done-" not in text


@pytest.mark.kafka
@pytest.mark.slow
def test_a_kept_demo_leaves_its_broker_for_audit_and_a_recording_that_replays(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("INTENTWATCH_HOME", str(tmp_path))
    console = Console(record=True, width=200)
    port = free_port()  # its own broker: the demo's fleet stays off the session's topics
    code = run_demo(seed=11, agents=1, duration=20.0, keep=True, port=port, console=console)
    [folder] = tmp_path.glob("demo-*")
    try:
        assert code == 0
        text = console.export_text()
        assert "Fleet seed 11" in text and "Kept (--keep)" in text
        assert f"intentwatch kafka down --home {folder / 'kafka'} && rm -r {folder}" in text
        audit = CliRunner().invoke(app, ["audit", "--bootstrap", f"127.0.0.1:{port}", "--json"])
        assert audit.exit_code == 0, audit.output
        assert json.loads(audit.output)
    finally:
        down(folder / "kafka")
    records = list(read_jsonl(folder / EVENTS_FILE))
    assert {record["kind"] for record in records} == {"grant", "task", "toolcall"}
    verdicts = [v for outcome in replay(records, Engine()) for v in outcome.verdicts]
    assert len(verdicts) == sum(record["kind"] == "toolcall" for record in records)
    assert (folder / "worker" / "worker.log").exists()
