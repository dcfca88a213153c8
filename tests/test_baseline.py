"""Per-agent baselines: rarity, decay, bounded memory, cold-start backoff, flows, volumes."""

from __future__ import annotations

import itertools
import math

import pytest

from intentwatch.contracts import ToolCall
from intentwatch.models.baseline import Baseline
from intentwatch.models.catalogue import ToolCatalogue
from intentwatch.models.detectors import BaselineConfig, FleetNovelty, Rarity
from intentwatch.models.features import Observation, TaskContext
from intentwatch.models.statistics import DecayingCounts

CATALOGUE = ToolCatalogue()
SUPPORT = "spiffe://acme.org/agents/support"
FINANCE = "spiffe://acme.org/agents/finance"
_ids = itertools.count()


def observe(
    agent: str, calls: list[dict], context: TaskContext | None = None
) -> list[Observation]:
    """Observations of ``calls`` (dicts of ToolCall fields) made in one task of ``agent``."""
    context = context or TaskContext(agent)
    out = []
    for fields in calls:
        fields = {"ts": 0.0, **fields}
        call = ToolCall(event_id=str(next(_ids)), agent_id=agent, task_id="t", **fields)
        out.append(context.observe(call, CATALOGUE.resolve(call)))
    return out


def one(agent: str, **fields) -> Observation:
    return observe(agent, [fields])[0]


def learn(detector, agent: str, tasks: int, calls: list[dict]) -> None:
    for _ in range(tasks):
        for x in observe(agent, calls):
            detector.learn_one(x)


# -- building blocks ---------------------------------------------------------------------------


def test_counts_halve_after_one_half_life() -> None:
    counts = DecayingCounts(half_life=10, max_size=100)
    counts.learn_one("a")
    for _ in range(10):
        counts.learn_one("b")
    assert counts.count("a") == pytest.approx(0.5)


def test_memory_cap_holds_and_keeps_the_frequent_values() -> None:
    counts = DecayingCounts(half_life=1000, max_size=50)
    for i in range(2000):
        counts.learn_one("common" if i % 2 else f"rare-{i}")
        assert len(counts) <= 50
    assert counts.count("common") > 500  # about 540 after decay; the rare ones were evicted


def test_lazy_decay_survives_rescaling() -> None:
    counts = DecayingCounts(half_life=1, max_size=10)
    for _ in range(500):  # the increment passes 1e100 and is rescaled
        counts.learn_one("a")
    assert counts.count("a") == pytest.approx(2.0, rel=1e-6)
    assert counts.total == pytest.approx(2.0, rel=1e-6)


def test_novelty_is_high_for_sources_of_new_values() -> None:
    steady, diverse = DecayingCounts(1e6, 10_000), DecayingCounts(1e6, 10_000)
    for i in range(1000):
        steady.learn_one(i % 3)
        diverse.learn_one(i)
    assert steady.novelty(prior=20) < 0.05 < 0.9 < diverse.novelty(prior=20)


# -- rarity ------------------------------------------------------------------------------------


def test_rare_tool_scores_higher_than_common_tool() -> None:
    rarity = Rarity("tool", lambda x: x.tool)
    agent = f"{SUPPORT}/a1"
    learn(rarity, agent, 200, [{"tool": "zendesk.get_ticket"}] * 5 + [{"tool": "crm.lookup"}])
    common = rarity.score_one(one(agent, tool="zendesk.get_ticket"))
    rare = rarity.score_one(one(agent, tool="crm.lookup"))
    never = rarity.score_one(one(agent, tool="iam.update_user_password"))
    assert common < rare < never
    assert common == 0.0 and never == 1.0


def test_an_agent_that_always_meets_new_values_is_not_surprised_by_one_more() -> None:
    rarity = Rarity("target", lambda x: x.target, max_values=4096)
    steady, diverse = f"{SUPPORT}/steady", f"{FINANCE}/diverse"
    for i in range(500):
        for x in observe(steady, [{"tool": "gmail.send_email", "target": "mailto:ops@acme.org"}]):
            rarity.learn_one(x)
        for x in observe(diverse, [{"tool": "gmail.send_email", "target": f"mailto:c{i}@x.io"}]):
            rarity.learn_one(x)
    new = {"tool": "gmail.send_email", "target": "mailto:someone@new.example"}
    assert rarity.score_one(one(diverse, **new)) < rarity.score_one(one(steady, **new))


def test_a_new_agent_is_judged_by_its_role() -> None:
    rarity = Rarity("tool", lambda x: x.tool)
    learn(rarity, f"{SUPPORT}/a1", 100, [{"tool": "zendesk.get_ticket"}, {"tool": "crm.lookup"}])
    learn(rarity, f"{FINANCE}/f1", 100, [{"tool": "erp.get_invoice"}])
    newcomer = f"{SUPPORT}/a9"
    peers_tool = rarity.score_one(one(newcomer, tool="zendesk.get_ticket"))
    other_roles_tool = rarity.score_one(one(newcomer, tool="erp.get_invoice"))
    unknown_tool = rarity.score_one(one(newcomer, tool="iam.attach_user_policy"))
    assert peers_tool < other_roles_tool < unknown_tool


def test_a_new_role_is_judged_by_the_fleet() -> None:
    rarity = Rarity("tool", lambda x: x.tool)
    learn(rarity, f"{SUPPORT}/a1", 100, [{"tool": "zendesk.get_ticket"}, {"tool": "crm.lookup"}])
    stranger = "spiffe://acme.org/agents/newrole/n1"
    assert rarity.score_one(one(stranger, tool="zendesk.get_ticket")) < rarity.score_one(
        one(stranger, tool="iam.attach_user_policy")
    )


def test_agent_evidence_overrides_its_role() -> None:
    rarity = Rarity("tool", lambda x: x.tool)
    learn(rarity, f"{SUPPORT}/a1", 300, [{"tool": "zendesk.get_ticket"}])
    learn(rarity, f"{SUPPORT}/a2", 300, [{"tool": "crm.export_contacts"}])
    x = one(f"{SUPPORT}/a1", tool="crm.export_contacts")
    assert rarity.score_one(x) > 0.5
    assert "rare for this agent" in rarity.explain(x) or "never used" in rarity.explain(x)


def test_decay_forgets_old_habits() -> None:
    config = BaselineConfig(half_life_calls=50, level_scale=1.0, stats_half_life_calls=50)
    rarity = Rarity("tool", lambda x: x.tool, config)
    agent = f"{SUPPORT}/a1"
    learn(rarity, agent, 300, [{"tool": "old.tool"}])
    before = rarity.score_one(one(agent, tool="old.tool"))
    learn(rarity, agent, 1000, [{"tool": "new.tool"}])
    assert rarity.score_one(one(agent, tool="old.tool")) > before + 0.5


def test_rarity_memory_per_agent_is_capped() -> None:
    config = BaselineConfig(max_targets=64)
    rarity = Rarity("target", lambda x: x.target, config, max_values=config.max_targets)
    agent = f"{SUPPORT}/a1"
    for i in range(1000):
        rarity.learn_one(one(agent, tool="http.fetch", target=f"https://site{i}.example"))
    assert len(rarity._levels.agents[agent].counts) <= 64


def test_transition_rarity_is_conditional_on_the_previous_tool() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    usual = [{"tool": "zendesk.get_ticket"}, {"tool": "gmail.send_email"},
             {"tool": "crm.lookup"}, {"tool": "drive.delete_file"}]
    learn(baseline, agent, 200, usual)
    transition = baseline.detectors["transition_rarity"]
    seen = observe(agent, [{"tool": "zendesk.get_ticket"}, {"tool": "gmail.send_email"}])[1]
    unseen = observe(agent, [{"tool": "zendesk.get_ticket"}, {"tool": "drive.delete_file"}])[1]
    assert transition.score_one(seen) == 0.0
    assert transition.score_one(unseen) > 0.5
    assert "zendesk.get_ticket → drive.delete_file" in transition.explain(unseen)


# -- flows, volumes, novelty -------------------------------------------------------------------


def test_an_external_send_carries_the_most_sensitive_data_read_before_it() -> None:
    agent = f"{SUPPORT}/a1"
    read = {"tool": "crm.lookup", "data_labels": ["pii", "confidential"]}
    external = observe(agent, [read, {"tool": "gmail.send_email", "target": "mailto:x@evil.io"}])
    internal = observe(agent, [read, {"tool": "gmail.send_email", "target": "mailto:b@acme.org"}])
    clean = observe(agent, [{"tool": "crm.lookup", "data_labels": ["internal"]},
                            {"tool": "gmail.send_email", "target": "mailto:x@evil.io"}])
    assert external[1].sensitive == ("pii", "confidential")
    assert external[1].carried == ("external send", "confidential")
    assert internal[1].carried is None and external[0].carried is None
    assert clean[1].carried == ("external send", "none")


def test_reading_secrets_taints_the_task_and_code_execution_is_a_sink() -> None:
    agent = f"{SUPPORT}/a1"
    calls = [{"tool": "fs.read_file", "target": "file:///workspace/.env"},
             {"tool": "python.run_code"}]
    read, run = observe(agent, calls)
    assert read.sensitive == ("credentials",)
    assert run.carried == ("code execution", "credentials")


def test_a_flow_of_data_the_agent_never_sends_out_scores_high() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    send = {"tool": "gmail.send_email", "target": "mailto:customer@shop.example"}
    learn(baseline, agent, 100, [{"tool": "crm.lookup", "data_labels": ["pii"]}, send])
    learn(baseline, agent, 100, [{"tool": "kb.search"}, send])
    flow = baseline.detectors["flow"]
    routine = observe(agent, [{"tool": "crm.lookup", "data_labels": ["pii"]}, send])[1]
    unusual = observe(agent, [{"tool": "drive.get_file", "data_labels": ["confidential"]}, send])[1]
    clean = observe(agent, [{"tool": "kb.search"}, send])[1]
    assert flow.score_one(routine) == flow.score_one(clean) == 0.0
    assert flow.score_one(unusual) == 1.0
    assert "after reading confidential data" in flow.explain(unusual)


def test_bytes_far_above_the_agents_usual_score_high() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    for i in range(200):
        size = 4000 + 50 * (i % 20)
        for x in observe(agent, [{"tool": "gmail.send_email", "bytes_out": size}]):
            baseline.learn_one(x)
    volume = baseline.detectors["bytes_out"]
    assert volume.score_one(one(agent, tool="gmail.send_email", bytes_out=4500)) == 0.0
    huge = one(agent, tool="gmail.send_email", bytes_out=5_000_000)
    assert volume.score_one(huge) == 1.0
    assert "5.0 MB" in volume.explain(huge)
    # bytes are judged per tool: a tool with no history has nothing to compare with
    assert volume.score_one(one(agent, tool="s3.put_object", bytes_out=5_000_000)) == 0.0


def test_payloads_that_keep_growing_within_a_task_score_high() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    send = "gmail.send_email"
    # this agent's tasks send twice with payloads of about the same size
    learn(baseline, agent, 100, [{"tool": send, "bytes_out": 4000},
                                 {"tool": send, "bytes_out": 3900}])
    creep = observe(agent, [{"tool": send, "bytes_out": 4000 * 1.6**i} for i in range(5)])
    growth = baseline.detectors["payload_growth"]
    assert creep[0].growth is None  # nothing to grow from yet
    assert creep[1].growth == pytest.approx(0.5 * math.log(1.6))  # a run of two counts half
    assert growth.score_one(creep[1]) < growth.score_one(creep[-1])
    assert growth.score_one(creep[-1]) == 1.0
    assert "grew 6.6×" in growth.explain(creep[-1])
    # a smaller payload ends the run; reads never count
    after = observe(agent, [{"tool": send, "bytes_out": 9000}, {"tool": send, "bytes_out": 100}])
    assert after[1].growth == 0.0 and growth.score_one(after[1]) == 0.0
    reads = observe(agent, [{"tool": "crm.lookup", "bytes_out": 10 * 4**i} for i in range(4)])
    assert all(x.growth is None for x in reads)


def test_an_agent_whose_payloads_usually_grow_is_not_flagged_for_it() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    send = "gmail.send_email"
    learn(baseline, agent, 100, [{"tool": send, "bytes_out": 1000 * 3**i} for i in range(3)])
    creep = observe(agent, [{"tool": send, "bytes_out": 1000 * 3**i} for i in range(3)])
    assert baseline.detectors["payload_growth"].score_one(creep[-1]) < 0.2


def test_a_burst_of_calls_raises_the_rate() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    for _ in range(100):
        for x in observe(agent, [{"tool": "crm.lookup", "ts": 60.0 * i} for i in range(5)]):
            baseline.learn_one(x)
    burst = observe(agent, [{"tool": "drive.delete_file", "ts": 0.5 * i} for i in range(40)])
    rate = baseline.detectors["rate"]
    assert rate.score_one(burst[0]) == 0.0
    assert rate.score_one(burst[-1]) == 1.0


def test_repeating_a_tool_more_than_usual_in_one_task_scores_high() -> None:
    baseline = Baseline()
    agent = f"{SUPPORT}/a1"
    learn(baseline, agent, 100, [{"tool": "crm.lookup"}, {"tool": "drive.delete_file"}])
    burst = observe(agent, [{"tool": "drive.delete_file"}] * 12)
    repeats = baseline.detectors["tool_repeats"]
    assert repeats.score_one(burst[0]) == 0.0
    assert repeats.score_one(burst[1]) < repeats.score_one(burst[-1])
    assert repeats.score_one(burst[-1]) > 0.5


def test_fleet_novelty_of_a_domain() -> None:
    config = BaselineConfig(fleet_novelty_prior_calls=10)
    novelty = FleetNovelty("domain", lambda x: x.domain, config)
    for i in range(200):
        novelty.learn_one(one(f"{SUPPORT}/a{i % 5}", tool="http.fetch",
                              target="https://news.example.com/a"))
    seen = one(f"{SUPPORT}/a1", tool="http.post", target="https://api.example.com/x")
    new = one(f"{SUPPORT}/a1", tool="http.post", target="https://drop.evil.example/x")
    assert novelty.score_one(seen) < 0.01 and novelty.score_one(new) > 0.9
    assert "never seen in the fleet" in novelty.explain(new)


def test_internal_and_external_destinations_are_told_apart() -> None:
    x = one(f"{SUPPORT}/a1", tool="http.post", target="https://admin.acme.org/api/users")
    y = one(f"{SUPPORT}/a1", tool="http.post", target="https://admin.evil.example/api/users")
    assert not x.external and y.external
    assert BaselineConfig(internal_domains=("evil.example",)).internal_domains == ("evil.example",)
