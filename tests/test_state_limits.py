"""Per-agent state is bounded by count and bytes (issue 10, row 1; the limits are
:class:`~intentwatch.models.limits.StateLimits`, ``limits`` in the scoring config).

Each test is a hostile agent against the engine, with the engine's stores as the worker's
tables hold them (one value per agent for grants, per task for open and ended tasks): no
value may come near the broker's 1 MB message limit, every refusal and eviction is
counted, and nothing forgotten lets a credential be used unjudged.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from intentwatch.contracts import Grant, RecordRejected, encode
from intentwatch.models.config import ScoringConfig
from intentwatch.models.engine import Engine, Outcome
from intentwatch.models.limits import StateLimits
from tests.test_engine import AGENT, OTHER, ScriptedDetector, call, grant, task_event

LIMITS = StateLimits()
WELL_UNDER = 1024 * 1024 // 2
"""Half the broker's message limit: no table value or output record may pass it."""


def make_engine(**limits: int) -> Engine:
    config = ScoringConfig(version="test-1", limits=limits)
    return Engine(config, detector=ScriptedDetector())


def largest_value(engine: Engine) -> int:
    """Bytes of the largest value of the engine's tables, as the worker stores them."""
    values = [*engine.grants.values(), *engine.open.values(), *engine.ended.values()]
    return max(len(msgspec.msgpack.encode(value)) for value in values)


def open_tasks(engine: Engine, agent: str = AGENT) -> list[str]:
    return [task.task_id for task in engine.open.values() if task.agent_id == agent]


def test_five_thousand_open_tasks_for_one_agent_end_the_least_active_and_revoke_them():
    engine, outs = make_engine(), Outcome()
    engine.process(task_event("started", ts=99.0, task="bystander", agent=OTHER))
    for n in range(5000):
        ts = 100.0 + n
        outs.extend(engine.process(task_event("started", ts=ts, task=f"t{n}")))
        if n % 2 == 0:  # half of them with a grant
            outs.extend(engine.process(grant(task=f"t{n}", issued_at=ts, expires_at=9e5), now=ts))
        outs.extend(engine.process(call(ts=ts, task=f"t{n}", n=n, args={"body": "x" * 4000})))
    outs.extend(engine.tick(5200.0))  # the grace of the last ungranted calls

    assert len(open_tasks(engine)) == LIMITS.open_tasks_per_agent
    assert open_tasks(engine, OTHER) == ["bystander"]  # another agent's task is not touched
    assert set(open_tasks(engine)) == {f"t{n}" for n in range(5000 - 256, 5000)}  # the newest
    assert engine.shed["task", "evicted"] == 5000 - LIMITS.open_tasks_per_agent
    assert largest_value(engine) <= WELL_UNDER
    assert Counter(v.event_id for v in outs.verdicts) == {call(ts=100.0 + n, task=f"t{n}", n=n)
                                                         .event_id: 1 for n in range(5000)}
    evicted = {f"t{n}" for n in range(0, 5000 - 256, 2)}  # the granted ones that were evicted
    revoked = {r.task_id for r in outs.revocations
               if r.reason_code == "policy" and r.credential_ids == [f"c-{r.task_id}"]}
    assert evicted <= revoked  # their credentials end with them

    late = engine.process(call(ts=5300.0, task="t4742", n=9), now=5300.0)  # fail closed
    assert late.verdicts[0].decision == "revoke"
    assert late.verdicts[0].reasons[0].code == "call_after_task_end"
    assert not engine.process(call(ts=5300.0, task="t0", n=9), now=5300.0).verdicts
    [forgotten] = engine.tick(5310.0).verdicts  # its tombstone made room: no grant either
    assert (forgotten.decision, forgotten.reasons[0].code) == ("revoke", "no_grant")
    assert engine.process(call(ts=5300.0, task="t4998", n=9)).verdicts[0].decision == "allow"


def test_tasks_opened_by_their_first_call_make_room_too():
    engine = make_engine()
    for n in range(300):  # no task event, no grant: the call opens the task
        engine.process(call(ts=100.0 + n, task=f"t{n}", n=n))
    assert set(open_tasks(engine)) == {f"t{n}" for n in range(300 - 256, 300)}
    assert engine.shed["task", "evicted"] == 300 - LIMITS.open_tasks_per_agent


@pytest.mark.slow
def test_a_task_with_a_hundred_thousand_calls_keeps_its_state_and_audit_bounded():
    engine = make_engine()
    engine.process(grant(task="big", expires_at=9e9))
    for n in range(100_000):  # each outside the grant, each with its own tool and target
        engine.process(call(ts=200.0 + n / 100, task="big", n=n, tool=f"shell.run_{n:06}",
                            target=f"https://h{n}.evil.example/" + "p" * 200,
                            data_labels=[f"l{n % 1000}"], args={"cmd": "y" * 1000}))
    [task] = engine.open.values()
    assert task.calls == 100_000
    assert len(msgspec.msgpack.encode(task)) <= WELL_UNDER
    assert task.staged_bytes <= LIMITS.staged_bytes_per_task
    assert task.usage_bytes <= LIMITS.usage_bytes_per_task
    assert engine.shed["staged_call", "refused"] == 100_000 - len(task.staged)
    assert engine.shed["usage", "refused"] > 0

    [audit] = engine.process(task_event("completed", ts=2000.0, task="big")).audits
    assert audit.calls == 100_000 and audit.revoked
    assert len(encode(audit)) <= WELL_UNDER  # the output record is bounded too


@pytest.mark.slow
def test_a_hundred_thousand_ended_tasks_keep_the_agents_tombstones_bounded():
    engine = make_engine()
    engine.process(grant(task="early", expires_at=9e9))
    engine.process(task_event("completed", ts=100.0, task="early"))
    long = "x" * 900  # task ids as long as a contract allows make the biggest tombstones
    for n in range(100_000):
        engine.process(task_event("completed", ts=200.0 + n / 100, task=f"t{n}-{long}"))
    mine = [key for key in engine.ended if key.startswith(AGENT + "|")]
    sizes = sum(len(key) + len(msgspec.msgpack.encode(engine.ended[key])) for key in mine)
    assert len(mine) <= LIMITS.tombstones_per_agent
    assert sizes <= LIMITS.tombstone_bytes_per_agent
    assert engine.shed["tombstone", "evicted"] == 100_001 - len(mine)
    assert largest_value(engine) <= WELL_UNDER
    assert "early" not in engine.grants.get(AGENT, {})  # forgotten with its tombstone

    late = engine.process(call(ts=1300.0, task="early", n=2), now=1300.0)
    assert not late.verdicts  # no grant: the call waits for one, then is revoked
    [verdict] = engine.tick(1310.0).verdicts
    assert (verdict.decision, verdict.reasons[0].code) == ("revoke", "no_grant")


@pytest.mark.parametrize("forget", ["evicted", "aged out"])
def test_the_grant_of_a_task_forgotten_early_is_never_admitted_again(forget: str) -> None:
    """A tombstone forgotten early (past the tombstone limits, or a day after the task
    ended) took with it what refused the task's grant; a per-agent mark, the latest issue
    time of the forgotten tasks' grants, refuses it and any grant issued no later for a
    task the engine holds nothing of (``task_forgotten``)."""
    engine = make_engine(tombstones_per_agent=3)
    stores = {"grants": engine.grants, "open": engine.open, "ended": engine.ended,
              "forgotten": engine.forgotten}
    old = grant(task="early", issued_at=100.0, expires_at=9e9)
    engine.process(old, now=100.0)
    engine.process(call(ts=105.0, task="early", target="https://crm.acme.org/c/7"))
    engine.process(task_event("completed", ts=110.0, task="early"))
    if forget == "evicted":
        for n in range(3):  # three later tasks leave no room for the early one's tombstone
            ts = 120.0 + 10 * n
            engine.process(grant(task=f"t{n}", issued_at=ts, expires_at=9e9), now=ts)
            engine.process(task_event("completed", ts=ts + 5, task=f"t{n}"))
        assert engine.shed["tombstone", "evicted"] == 1
        replayed_at = 200.0
    else:
        replayed_at = 110.0 + 2 * 86400
        engine.tick(replayed_at)
        assert engine.shed["tombstone", "evicted"] == 0
    assert "|early" not in "".join(engine.ended) and engine.forgotten == {AGENT: 100.0}

    def refused(again: Grant, engine: Engine = engine) -> str:
        with pytest.raises(RecordRejected) as error:
            engine.process(again, now=replayed_at)
        return error.value.code

    assert refused(old) == "task_forgotten"
    assert refused(grant(task="early", grant_id="g-other", issued_at=90.0,
                         expires_at=9e9)) == "task_forgotten"  # any grant issued no later
    restarted = Engine(engine.config, detector=ScriptedDetector(), **stores)
    restarted.restore()
    assert refused(old, restarted) == "task_forgotten"  # the mark is in a table
    late = restarted.process(call(ts=replayed_at, task="early", n=2), now=replayed_at)
    late.extend(restarted.tick(replayed_at + 60))
    assert [(v.decision, v.reasons[0].code) for v in late.verdicts] == [("revoke", "no_grant")]
    fresh = restarted.process(grant(task="new", issued_at=replayed_at, expires_at=9e9),
                              now=replayed_at)  # a grant issued since is a new task's
    assert not fresh.revocations and "new" in restarted.grants[AGENT]
    assert restarted.process(call(ts=replayed_at, task="new", target="https://crm.acme.org/c/7")
                             ).verdicts[0].decision == "allow"


def test_a_grant_issued_while_forgotten_tasks_ran_is_admitted():
    """What marks forgotten tasks is their grants' issue time, not their end: a task
    granted while older ones still ran (or read behind a backlog, while ticks moved
    stream time on) is no forgotten task."""
    engine = make_engine(tombstones_per_agent=2)
    for n in range(3):  # tasks granted at 100-102 that end at 200-202: t0 is forgotten
        engine.process(grant(task=f"t{n}", issued_at=100.0 + n, expires_at=9e9), now=100.0 + n)
    for n in range(3):
        engine.process(task_event("completed", ts=200.0 + n, task=f"t{n}"))
    assert engine.shed["tombstone", "evicted"] == 1 and engine.forgotten == {AGENT: 100.0}
    engine.tick(5000.0)
    engine.process(grant(task="t3", issued_at=150.0, expires_at=9e9), now=5000.0)
    assert "t3" in engine.grants[AGENT]


def test_five_thousand_grants_for_one_agent_keep_its_grants_value_bounded():
    """The agent's grants (one table value) grew past the broker's 1 MB message limit.
    Grants of ended tasks make room for new ones; a grant of a new task past the agent's
    open tasks ends the least active one; past the bytes a grant is refused."""
    engine = make_engine()
    wide = {"intent": "x" * 3000, "targets": [f"crm://region-{n}/*" for n in range(100)]}
    for n in range(2500):  # tasks that end: their grants make room for the next ones
        engine.process(grant(task=f"done-{n}", issued_at=100.0 + n, expires_at=9e4, **wide),
                       now=100.0 + n)
        engine.process(task_event("completed", ts=100.0 + n, task=f"done-{n}"))
    held = engine.grants[AGENT]
    assert engine.shed["grant", "evicted"] > 0 and "done-2499" in held
    assert len(encode(held)) <= LIMITS.grant_bytes_per_agent

    for n in range(2500):  # tasks that stay open: the newest keep their grants
        engine.process(grant(task=f"open-{n}", issued_at=3000.0 + n, expires_at=9e4),
                       now=3000.0 + n)
    held = engine.grants[AGENT]
    assert len(held) == LIMITS.grants_per_agent and len(encode(held)) <= WELL_UNDER
    assert set(held) == {f"open-{n}" for n in range(2500 - 256, 2500)}
    assert engine.shed["task", "evicted"] == 2500 - 256
    assert engine.process(call(ts=6000.0, task="open-2499")).verdicts[0].decision == "allow"

    codes = []
    for n in range(300):  # grants as large as a record allows: past the agent's bytes
        try:
            engine.process(grant(task=f"big-{n}", issued_at=6000.0 + n, expires_at=9e4,
                                 intent="y" * 16_000), now=6000.0 + n)
        except RecordRejected as error:
            codes.append(error.code)
    assert codes and set(codes) == {"too_many_grants"}
    assert engine.shed["grant", "refused"] == len(codes)
    assert len(encode(engine.grants[AGENT])) <= LIMITS.grant_bytes_per_agent


def test_calls_waiting_for_a_grant_that_never_comes_are_bounded_by_count_and_bytes():
    engine, verdicts = make_engine(), []
    for n in range(3 * LIMITS.parked_calls_per_task):
        verdicts += engine.process(call(ts=100.0, n=n), now=100.0).verdicts
        [task] = engine.open.values()
        assert len(task.parked) <= LIMITS.parked_calls_per_task
    assert len(verdicts) == 2 * (LIMITS.parked_calls_per_task + 1)
    assert {v.reasons[0].code for v in verdicts} == {"no_grant"}

    engine, verdicts = make_engine(), []
    for n in range(10):  # 60 kB each: two fit the room
        verdicts += engine.process(call(ts=100.0, n=n, args={"b": "z" * 60_000})).verdicts
        [task] = engine.open.values()
        assert task.parked_bytes <= LIMITS.parked_bytes_per_task
    assert len(verdicts) == 9 and engine.shed["parked_call", "evicted"] == 9


def test_the_limits_are_configuration():
    engine = make_engine(open_tasks_per_agent=2, tombstones_per_agent=3)
    for n in range(5):
        engine.process(task_event("started", ts=100.0 + n, task=f"t{n}"))
        engine.process(task_event("completed", ts=100.0 + n, task=f"e{n}"))
    assert sorted(open_tasks(engine)) == ["t3", "t4"]
    # the newest three (of those that ended at the same time, the first by id goes first)
    assert sorted(key.rsplit("|", 1)[1] for key in engine.ended) == ["e4", "t1", "t2"]
    restored = Engine(engine.config, grants=engine.grants, open=engine.open,
                      ended=engine.ended, detector=ScriptedDetector())
    restored.restore()  # the same room after a restart: the next task ends the least active
    restored.process(task_event("started", ts=200.0, task="t5"))
    assert sorted(open_tasks(restored)) == ["t4", "t5"]


def test_a_task_of_distinct_targets_keeps_the_detectors_scratch_bounded():
    engine = Engine(ScoringConfig(version="test-1"))  # the real detector
    engine.process(grant(task="wide", tools=["*"], targets=["*"], expires_at=9e9))
    for n in range(1_500):  # each a write to its own file and a send to its own address
        engine.process(call(ts=200.0 + n / 100, task="wide", n=2 * n, tool=f"fs.write_file_{n}",
                            target=f"file:///scratch/{n}"))
        engine.process(call(ts=200.0 + n / 100, task="wide", n=2 * n + 1,
                            tool=f"mail.send_{n}", target=f"mailto:x{n}@mail{n}.example"))
    [state] = engine.open.values()
    task = state.scoring
    cap = engine.detector.fusion.max_task_samples
    assert len(task.context.written) == len(task.destinations) == cap
    assert len(task.unasked_tools) == cap
    assert set(task.alerted_destinations) <= set(task.destinations)
