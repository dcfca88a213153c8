"""Hostile times and grants against the engine's admission (issue 10, rows 3-5, 8, 9).

Time cannot be forged: an event stamped past the allowance is rejected (the worker checks
it where records enter; rows 3-5 run against the real worker in
``test_integration_hostile``). Grants cannot be replayed: an older grant after a newer
one, a grant for an ended task or a reused grant id are rejected, each with its own code.
"""

from __future__ import annotations

import msgspec
import pytest

from intentwatch.contracts import RecordRejected
from intentwatch.models.admission import check_time
from intentwatch.models.config import ScoringConfig
from intentwatch.models.engine import Engine
from tests.test_engine import call, grant, make_engine, task_event

YEAR = 365 * 86400.0


def rejected(engine: Engine, event, now: float) -> str:
    with pytest.raises(RecordRejected) as error:
        engine.process(event, now=now)
    return error.value.code


@pytest.mark.parametrize(
    ("event", "ahead"),
    [(call(ts=200.0 + YEAR), True), (task_event("completed", ts=253402300799.0), True),
     (grant(issued_at=200.0 + 301.0, expires_at=2000.0), True), (call(ts=200.0 + 299.0), False)],
    ids=["call_a_year_ahead", "task_end_in_9999", "grant_301_s_ahead", "call_299_s_ahead"],
)
def test_an_event_stamped_past_the_allowance_is_rejected(event, ahead: bool) -> None:
    if not ahead:
        check_time(event, 200.0, 300.0)
        return
    with pytest.raises(RecordRejected) as error:
        check_time(event, 200.0, 300.0)
    assert error.value.code == "timestamp_in_future"


def test_the_skew_allowed_before_a_grant_is_issued_is_configuration():
    engine, _ = make_engine()  # 30 s by default
    engine.process(grant(issued_at=100.0))
    assert engine.process(call(ts=69.0)).verdicts[0].reasons[0].code == "grant_not_yet_valid"
    config = ScoringConfig(alert_threshold=0.5, revoke_threshold=0.8, clock_skew_seconds=60.0)
    lenient = Engine(config, detector=make_engine()[1])
    lenient.process(grant(issued_at=100.0))
    assert lenient.process(call(ts=69.0)).verdicts[0].decision == "allow"


def test_an_older_wider_grant_after_the_newer_narrower_one_is_rejected():
    engine, _ = make_engine()
    wide = grant(grant_id="g-wide", issued_at=100.0, tools=["*"])
    narrow = grant(grant_id="g-narrow", issued_at=150.0, tools=["crm.*"])
    engine.process(wide, now=100.0)
    engine.process(narrow, now=150.0)
    assert rejected(engine, wide, now=160.0) == "grant_superseded"
    out = engine.process(call(ts=170.0, tool="iam.update_user_password"), now=170.0)
    assert out.verdicts[0].reasons[0].code == "tool_not_granted"


def test_a_grant_for_an_ended_task_is_rejected():
    engine, _ = make_engine()
    engine.process(grant(issued_at=100.0), now=100.0)
    engine.process(task_event("completed", ts=300.0), now=300.0)
    later = grant(grant_id="g-again", issued_at=310.0, tools=["*"])
    assert rejected(engine, later, now=310.0) == "task_ended"


def test_a_grant_id_names_one_grant_and_a_redelivery_is_a_no_op():
    engine, _ = make_engine()
    first = grant("t1", grant_id="g1", issued_at=100.0)
    engine.process(first, now=100.0)
    assert not engine.process(first, now=101.0)  # read again: nothing new
    other_task = grant("t2", grant_id="g1", issued_at=120.0)
    assert rejected(engine, other_task, now=120.0) == "grant_id_reused"
    changed = msgspec.structs.replace(first, tools=["*"])
    assert rejected(engine, changed, now=130.0) == "grant_id_reused"
    assert engine.grants["spiffe://acme.org/agents/support/a1"] == {"t1": first}

