"""The engine's facts: conformance, lifecycle, grace, revocations, audit, staged learning.

The learned layers are replaced by a scripted detector here; they have tests of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import pytest

from intentwatch.contracts import Grant, Reason, TaskEvent, ToolCall
from intentwatch.models.config import ScoringConfig
from intentwatch.models.engine import Engine, TaskState, task_key

AGENT = "spiffe://acme.org/agents/support/a1"
OTHER = "spiffe://acme.org/agents/support/a2"


@dataclass
class ScriptedAssessment:
    score: float
    reasons: list[Reason] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)
    rule: str = "score"
    explain: Callable[[], list[Reason]] | None = None


class ScriptedDetector:
    """Scores by tool name; records what it was asked to learn."""

    def __init__(self, scores: dict[str, float] | None = None) -> None:
        self.scores = scores or {}
        self.learned: list[tuple[str, list[str]]] = []
        self.forgotten: list[str] = []

    def open_task(self, agent_id, grant):
        return {}  # what it keeps of a task: the task's id

    def assess(self, call, grant, tool, task):
        task["task_id"] = call.task_id
        score = self.scores.get(call.tool, 0.05)
        reasons = [Reason(code="rare_tool", weight=score, detail=f"{call.tool} is rare")]
        return ScriptedAssessment(score, reasons, {"rarity": score})

    def end_task(self, agent_id, task, calls, *, learn):
        task_id = task["task_id"] if task else calls[0][0].task_id if calls else None
        (self.learned if learn else self.forgotten).append(
            (task_id, [c.tool for c, _ in calls]) if learn else task_id
        )

    def take_learned_agents(self):
        return set()  # it keeps nothing to write back

    def task_state(self, task):
        return None  # what it keeps of a task is not stored


def make_engine(**scores: float) -> tuple[Engine, ScriptedDetector]:
    detector = ScriptedDetector({k.replace("__", "."): v for k, v in scores.items()})
    config = ScoringConfig(version="test-1", alert_threshold=0.5, revoke_threshold=0.8)
    return Engine(config, detector=detector), detector


def grant(task="t1", agent=AGENT, **overrides) -> Grant:
    fields = dict(
        grant_id=f"g-{task}", agent_id=agent, task_id=task, credential_ids=[f"c-{task}"],
        intent="answer ticket 42 from jane@customer.example", tools=["crm.*", "gmail.*"],
        targets=["*.acme.org", "mailto:*@customer.example"], data_labels=["internal", "pii"],
        issued_at=100.0, expires_at=1000.0, issuer="broker",
    )
    fields.update(overrides)
    return Grant(**fields)


def call(ts=200.0, tool="crm.lookup_customer", task="t1", agent=AGENT, n=1, **extra) -> ToolCall:
    extra.setdefault("credential_id", f"c-{task}")
    return ToolCall(event_id=f"{task}-e{n}-{ts}", ts=ts, agent_id=agent, task_id=task,
                    tool=tool, **extra)


def task_event(status, ts=500.0, task="t1", agent=AGENT) -> TaskEvent:
    return TaskEvent(event_id=f"{task}-{status}", ts=ts, agent_id=agent, task_id=task,
                     status=status)


def test_conforming_call_is_allowed_with_config_version():
    engine, _ = make_engine()
    engine.process(grant())
    out = engine.process(call(target="https://crm.acme.org/c/7", data_labels=["pii"]))
    (verdict,) = out.verdicts
    assert verdict.decision == "allow"
    assert verdict.model_version == "test-1"
    assert out.revocations == []


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"tool": "iam.update_user_password"}, "tool_not_granted"),
        ({"target": "mailto:x@evil.example"}, "target_not_granted"),
        ({"data_labels": ["restricted"]}, "label_not_granted"),
    ],
)
def test_call_outside_grant_revokes_for_intent_violation(changes, code):
    engine, _ = make_engine()
    engine.process(grant())
    out = engine.process(call(**changes))
    assert out.verdicts[0].decision == "revoke"
    assert out.verdicts[0].score == 1.0
    assert out.verdicts[0].reasons[0].code == code
    (revocation,) = out.revocations
    assert revocation.reason_code == "intent_violation"
    assert revocation.credential_ids == ["c-t1"]
    assert revocation.evidence == [out.verdicts[0].event_id]


def test_credential_from_another_task_is_reuse():
    engine, _ = make_engine()
    engine.process(grant("t1"))
    engine.process(grant("t2"))
    out = engine.process(call(task="t2", credential_id="c-t1"))
    assert out.verdicts[0].reasons[0].code == "credential_not_issued"
    assert out.revocations[0].reason_code == "credential_reuse"
    assert set(out.revocations[0].credential_ids) == {"c-t2", "c-t1"}


def test_call_after_expiry_without_credential_is_ttl_expired():
    engine, _ = make_engine()
    engine.process(grant())
    out = engine.process(call(ts=1001.0, credential_id=None))
    assert out.verdicts[0].reasons[0].code == "grant_expired"
    assert out.revocations[0].reason_code == "ttl_expired"


def test_expired_credential_presented_is_reuse():
    engine, _ = make_engine()
    engine.process(grant())
    out = engine.process(call(ts=1001.0))
    assert out.revocations[0].reason_code == "credential_reuse"


def test_timer_revokes_expired_grant_once_with_audit():
    engine, _ = make_engine()
    engine.process(grant())
    engine.process(call())
    assert not engine.tick(999.0)
    out = engine.tick(1000.0)
    (revocation,) = out.revocations
    assert revocation.reason_code == "ttl_expired"
    assert out.audits[0].ended == "expired"
    assert not engine.tick(2000.0)
    late = engine.process(call(ts=1500.0))
    assert late.verdicts[0].reasons[0].code == "call_after_task_end"
    assert late.revocations[0].reason_code == "credential_reuse"


def test_task_end_revokes_and_later_call_is_reuse():
    engine, detector = make_engine()
    engine.process(grant())
    engine.process(call())
    out = engine.process(task_event("completed"))
    assert [r.reason_code for r in out.revocations] == ["task_completed"]
    assert detector.learned == [("t1", ["crm.lookup_customer"])]
    late = engine.process(call(ts=600.0))
    assert late.revocations[0].reason_code == "credential_reuse"


def test_revocation_ids_are_deterministic():
    ids = []
    for _ in range(2):
        engine, _ = make_engine()
        engine.process(grant())
        ids.append(engine.process(call(tool="shell.exec")).revocations[0].revocation_id)
    assert ids[0] == ids[1]
    engine, _ = make_engine()
    engine.process(grant(task="t9"))
    assert engine.process(call(tool="shell.exec", task="t9")).revocations[0].revocation_id != ids[0]


def test_call_before_grant_waits_for_grace_and_is_judged_against_it():
    engine, _ = make_engine()
    assert not engine.process(call(ts=100.5), now=100.5)
    out = engine.process(grant(), now=101.5)
    assert out.verdicts[0].decision == "allow"
    assert not engine.tick(200.0)


def test_call_without_grant_is_judged_after_grace():
    engine, _ = make_engine()
    engine.process(call(ts=100.0), now=100.0)
    assert not engine.tick(101.9)
    out = engine.tick(102.0)
    assert out.verdicts[0].reasons[0].code == "no_grant"
    assert out.revocations[0].reason_code == "policy"


def test_a_call_whose_grant_was_rejected_names_why_until_a_valid_grant_comes():
    engine, _ = make_engine()
    engine.grant_rejected(AGENT, "t1", "unsigned: grant is plain JSON, not a signed JWS")
    engine.process(call(ts=100.0), now=100.0)
    [reason, *_] = engine.tick(102.0).verdicts[0].reasons
    assert (reason.code, reason.detail) == (
        "grant_rejected", "grant rejected: unsigned: grant is plain JSON, not a signed JWS; "
        "task t1 has no valid grant")
    engine.grant_rejected(AGENT, "t2", "bad_signature: signature does not verify")
    engine.process(grant(task="t2"), now=103.0)
    assert engine.process(call(ts=104.0, task="t2"), now=104.0).verdicts[0].decision == "allow"


def test_detector_score_decides_alert_and_revoke():
    engine, _ = make_engine(gmail__send_email=0.6, gmail__forward_all=0.9)
    engine.process(grant())
    assert engine.process(call(tool="gmail.send_email", n=1)).verdicts[0].decision == "alert"
    out = engine.process(call(tool="gmail.forward_all", n=2))
    assert out.verdicts[0].decision == "revoke"
    assert out.revocations[0].reason_code == "anomaly"
    after = engine.process(call(n=3, ts=300.0))
    assert after.verdicts[0].reasons[0].code == "task_revoked"
    assert after.revocations == []


def test_revoked_task_is_never_learned():
    engine, detector = make_engine(gmail__forward_all=0.9)
    engine.process(grant())
    engine.process(call(tool="gmail.forward_all"))
    engine.process(task_event("completed"))
    assert detector.learned == []
    assert detector.forgotten == ["t1"]


def test_a_call_read_again_after_a_crash_gets_its_first_verdict_and_is_learned_once():
    tables: dict[str, dict] = {"grants": {}, "open": {}, "ended": {}}
    first, _ = make_engine(crm__add_note=0.3)
    first = Engine(first.config, detector=first.detector, **tables)
    first.process(grant())
    seen = [first.process(call(n=k, ts=200.0 + k, tool=tool)).verdicts[0]
            for k, tool in enumerate(("crm.lookup_customer", "crm.add_note"))]
    first.process(task_event("started", ts=150.0, task="t2"))
    first.process(grant("t2"))
    ended = first.process(call(task="t2", ts=210.0)).verdicts[0]
    first.process(task_event("completed", ts=220.0, task="t2"))

    # a new process takes over the tables and reads the records since the last commit
    again, detector = make_engine()  # its detector would judge every call 0
    again = Engine(again.config, detector=detector, **tables)
    again.restore()
    assert [again.process(call(n=k, ts=200.0 + k, tool=tool)).verdicts[0] for k, tool in
            enumerate(("crm.lookup_customer", "crm.add_note"))] == seen
    assert again.process(call(task="t2", ts=210.0)).verdicts == [ended]  # after its end too
    (audit,) = again.process(task_event("completed")).audits
    assert audit.calls == 2 and audit.max_score == seen[1].score
    assert detector.learned == [("t1", ["crm.lookup_customer", "crm.add_note"])]  # once each


def test_quiet_task_is_learned_without_ending():
    engine, detector = make_engine()
    engine.process(grant(expires_at=100_000.0))
    engine.process(call())
    engine.tick(200.0 + engine.config.quiet_period_seconds)
    assert detector.learned == [("t1", ["crm.lookup_customer"])]


def test_audit_puts_grant_beside_use():
    engine, _ = make_engine()
    engine.process(grant())
    engine.process(task_event("started", ts=150.0))
    engine.process(call(target="https://crm.acme.org/c/7", data_labels=["pii"], n=1))
    engine.process(call(target="https://crm.acme.org/c/8", n=2, ts=210.0))
    engine.process(call(tool="shell.exec", n=3, ts=220.0))
    (audit,) = engine.process(task_event("completed")).audits
    assert audit.used["tools"] == {"crm.lookup_customer": 2, "shell.exec": 1}
    assert audit.unused["tools"] == ["gmail.*"]
    assert audit.unused["targets"] == ["mailto:*@customer.example"]
    assert audit.unused["data_labels"] == ["internal"]
    assert [o["code"] for o in audit.out_of_grant] == ["tool_not_granted"]
    assert audit.revoked is True and audit.max_score == 1.0
    assert audit.ended == "completed" and audit.started_at is not None


def test_agents_are_kept_apart():
    engine, _ = make_engine()
    engine.process(grant(agent=OTHER))
    out = engine.process(call(agent=AGENT), now=200.0)
    assert not out  # parked: AGENT has no grant for t1
    assert engine.tick(203.0).verdicts[0].reasons[0].code == "no_grant"


def test_restore_rebuilds_expiry_from_the_grants_store():
    engine, _ = make_engine()
    engine.process(grant())
    engine.process(call())
    survivor = Engine(engine.config, grants=engine.grants, detector=ScriptedDetector())
    survivor.restore()
    assert [r.reason_code for r in survivor.tick(1000.0).revocations] == ["ttl_expired"]


def test_restore_keeps_calls_waiting_for_their_grant():
    engine, _ = make_engine()
    engine.process(call(ts=100.0), now=100.0)
    engine.restore()
    assert engine.tick(102.0).verdicts[0].reasons[0].code == "no_grant"


def test_agent_clock_slightly_behind_the_broker_is_tolerated():
    engine, _ = make_engine()
    engine.process(grant(issued_at=100.0))
    assert engine.process(call(ts=95.0)).verdicts[0].decision == "allow"
    assert engine.process(call(ts=60.0, n=2)).verdicts[0].reasons[0].code == "grant_not_yet_valid"


def test_call_made_before_task_end_but_read_after_it_is_judged_normally():
    engine, _ = make_engine()
    engine.process(grant())
    engine.process(task_event("completed", ts=500.0))
    late_read = engine.process(call(ts=499.0))
    assert late_read.verdicts[0].decision == "allow"
    assert late_read.revocations == []


def test_score_revocation_led_by_an_intent_reason_is_an_intent_violation():
    engine, detector = make_engine()
    detector.assess = lambda call, grant, tool, task: ScriptedAssessment(
        0.9, [Reason(code="unnamed_target", weight=0.9, detail="recipient not named")]
    )
    engine.process(grant())
    assert engine.process(call(tool="gmail.send_email")).revocations[0].reason_code == (
        "intent_violation"
    )


def test_a_call_logged_before_its_grant_waits_for_it_by_stream_time():
    engine, _ = make_engine()
    assert not engine.process(call(ts=200.0), now=200.0)  # the grant may follow in the log
    assert not engine.tick(201.0)  # not yet grace_seconds past the call
    out = engine.process(grant(), now=201.5)
    assert out.verdicts[0].decision == "allow"


def test_stream_time_past_the_grace_judges_the_call_without_grant():
    engine, _ = make_engine()
    engine.process(call(ts=200.0), now=200.0)
    assert engine.tick(202.0).verdicts[0].reasons[0].code == "no_grant"


def test_a_call_read_long_after_it_was_made_waits_from_when_it_was_read():
    """Stream time may be far past a call's own time (a backlog): the grace counts from
    the moment the log reached it, so the grant right behind it is still in time."""
    engine, _ = make_engine()
    assert not engine.process(call(ts=200.0), now=5000.0)
    assert not engine.tick(5001.0)
    assert engine.process(grant(), now=5001.0).verdicts[0].decision == "allow"


def test_task_end_read_before_its_grant_revokes_and_audits_when_the_grant_comes():
    engine, _ = make_engine()
    ended = engine.process(task_event("completed", ts=500.0))
    assert not ended.revocations and not ended.audits  # nothing to revoke or compare yet
    out = engine.process(grant())
    (revocation,) = out.revocations
    assert (revocation.reason_code, revocation.credential_ids) == ("task_completed", ["c-t1"])
    (audit,) = out.audits
    assert audit.granted["tools"] == ["crm.*", "gmail.*"]
    assert not engine.process(grant()).revocations  # the same grant read again: said once


def test_a_finished_task_is_kept_for_a_day_of_stream_time_then_forgotten():
    engine, _ = make_engine()
    engine.process(grant(expires_at=9e9))
    engine.process(task_event("completed", ts=500.0))
    engine.tick(500.0 + 86000.0)
    late = engine.process(call(ts=86600.0), now=86600.0)
    assert late.verdicts[0].reasons[0].code == "call_after_task_end"
    days_later = 500.0 + 3 * 86400.0
    engine.tick(days_later)
    orphan = engine.process(call(ts=days_later + 1.0, n=2), now=days_later + 1.0)
    assert not orphan.verdicts  # forgotten: a new call waits for a grant again


def test_a_task_that_ended_before_its_grant_is_revoked_and_audited_when_the_grant_comes():
    engine, _ = make_engine()
    engine.process(task_event("completed", ts=500.0))
    assert not engine.tick(600.0).audits  # its grant may still come
    out = engine.process(grant(expires_at=9e9), now=650.0)
    assert [r.reason_code for r in out.revocations] == ["task_completed"]
    assert len(out.audits) == 1


def test_an_ended_task_stays_ended_for_an_engine_restored_from_its_tables():
    grants, ended = {}, {}
    config = ScoringConfig(version="test-1", alert_threshold=0.5, revoke_threshold=0.8)
    first = Engine(config, grants=grants, ended=ended, detector=ScriptedDetector())
    first.process(grant(expires_at=1000.0))
    first.process(call(ts=200.0))
    assert len(first.process(task_event("completed", ts=500.0)).audits) == 1

    restarted = Engine(config, grants=grants, ended=ended, detector=ScriptedDetector())
    restarted.restore()
    after_expiry = restarted.tick(1500.0)
    assert not after_expiry.revocations and not after_expiry.audits  # not expired again
    late = restarted.process(call(ts=1600.0, n=2), now=1600.0)
    assert late.verdicts[0].reasons[0].code == "call_after_task_end"
    assert [r.reason_code for r in late.revocations] == ["credential_reuse"]
    again = Engine(config, grants=grants, ended=ended, detector=ScriptedDetector())
    again.restore()
    assert not again.process(call(ts=1700.0, n=3), now=1700.0).revocations  # said once


def test_tombstones_are_forgotten_after_a_day_of_stream_time():
    engine, _ = make_engine()
    engine.process(grant(expires_at=9e9))
    engine.process(task_event("completed", ts=500.0))
    assert set(engine.ended) == {task_key(AGENT, "t1")}
    engine.tick(500.0 + 2 * 86400.0)
    assert not engine.ended and AGENT not in engine.grants


def test_an_allowed_call_names_its_reasons_without_sentences_a_revoked_one_with_them():
    engine = Engine()  # the real detector: the sentences are only written when needed
    engine.process(grant())
    allowed = engine.process(call(tool="crm.update_customer", target="https://crm.acme.org/c/7"))
    verdict = allowed.verdicts[0]
    assert verdict.decision == "allow"
    assert [(r.code, r.detail) for r in verdict.reasons] == [("intent", "")]
    assert verdict.reasons[0].weight == pytest.approx(verdict.score, abs=1e-3)

    engine = Engine()
    engine.process(grant())
    revoked = engine.process(call(tool="crm.update_customer", target="https://crm.acme.org/c/7",
                                  data_labels=["confidential"])).verdicts[0]
    assert revoked.decision == "revoke" and revoked.reasons[0].code == "label_not_granted"
    intent = next(r for r in revoked.reasons if r.code == "intent")
    assert "is not what the intent asks for" in intent.detail


def test_the_detectors_part_of_a_task_is_the_task_states_and_ends_with_its_learning():
    engine = Engine(ScoringConfig(version="test-1"))  # the real detector
    engine.process(grant())
    engine.process(call(n=1))
    [state] = engine.open.values()
    assert state.scoring is not None and list(state.scoring.scored) == ["t1-e1-200.0"]
    # what the open store keeps is plain data, the detector's part as its versioned state
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=TaskState)
    assert stored == state and stored.scoring is None
    assert stored.scoring_state == engine.detector.task_state(state.scoring)
    engine.process(call(n=2, ts=210.0))
    assert len(state.scoring.scored) == 2  # the same object, call after call
    engine.process(task_event("completed"))
    assert state.scoring is None and not engine.open  # learned with the task, gone with it
    assert engine.detector.learned_calls == 2


def test_a_task_that_goes_quiet_is_learned_and_goes_on_with_its_running_state():
    engine = Engine(ScoringConfig(version="test-1"))  # the real detector
    engine.process(grant(expires_at=100_000.0))
    first = engine.process(call(n=1, tool="crm.update_customer")).verdicts[0]
    [state] = engine.open.values()
    scoring = state.scoring
    quiet = 200.0 + engine.config.quiet_period_seconds
    engine.tick(quiet)
    assert engine.detector.learned_calls == 1 and not state.staged
    assert state.scoring is scoring and not scoring.scored  # learned once, going on
    later = engine.process(call(n=2, ts=quiet + 10.0, tool="crm.lookup_customer")).verdicts[0]
    assert later.components["task_risk"] >= first.components["task_risk"] > 0.0  # carried on
    assert first.decision != "revoke"
    assert scoring.scored[later.event_id].x.prev_tool == "crm.update_customer"  # not task start
    engine.process(task_event("completed", ts=quiet + 20.0))
    assert engine.detector.learned_calls == 2 and state.scoring is None
