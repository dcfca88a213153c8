"""Admission: whether an event may enter the engine's state at all.

Inputs come from agents that may be compromised, so two facts are checked before
an event is used, each refusal a :class:`~intentwatch.contracts.RecordRejected`
with its own code (the pipeline dead-letters it):

- **time**: an event stamped more than ``max_ahead`` seconds past ``now``
  (``timestamp_in_future``) would otherwise hold a task's judgement, expiry or end
  for as long as it likes. The worker checks it where records enter, against the wall
  clock, before the record moves any clock (:mod:`intentwatch.models.clock`); the
  engine itself never reads the wall clock.
- **grants**: a grant replaces the task's grant only if it is newer
  (``grant_superseded``); an id names one grant (``grant_id_reused``); a task that
  ended with a grant takes no other (``task_ended``). The same grant read again (a
  re-delivery, a re-read after a crash) is admitted as a no-op. Ended tasks are
  remembered for a day, within the tombstone limits; what is remembered of the ones
  forgotten earlier is the latest issue time of their grants, per agent: a grant issued
  no later for a task the engine holds nothing of may be one of theirs
  (``task_forgotten``), so a forgotten task's grant is never admitted again. (Issue
  times, not stream time: a grant read behind a backlog was issued long before the
  ticks of the wall clock moved stream time on.)

- **room**: an agent holds at most ``grants_per_agent`` grants of at most
  ``grant_bytes_per_agent`` bytes in all (:class:`~intentwatch.models.limits.StateLimits`;
  they are one state value, which must stay far below the broker's 1 MB message limit).
  A new grant first displaces grants of the agent's ended tasks, the oldest first
  (:func:`make_room`); if the grants of its open tasks alone leave no room it is refused
  (``too_many_grants``).

Grant admission uses the engine's state only, so re-reading a log gives the same
admissions. The time check is made once, at the edge: a record accepted there is
accepted again when re-read later (the wall clock only moves on), and ``intentwatch
replay`` makes no wall-clock check, so it gives the same verdicts.

>>> import msgspec
>>> from intentwatch.contracts import Grant
>>> old = Grant(grant_id="g1", agent_id="spiffe://acme.org/agents/a1", task_id="t1",
...     credential_ids=["c1"], tools=["*"], targets=["*"], data_labels=["*"],
...     issued_at=100.0, expires_at=900.0, issuer="broker")
>>> new = msgspec.structs.replace(old, grant_id="g2", issued_at=200.0, tools=["crm.*"])
>>> admit_grant(new, current=old, task_ended=False)
True
>>> try:
...     admit_grant(old, current=new, task_ended=False)
... except RecordRejected as error:
...     print(error.code)
grant_superseded
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from intentwatch.contracts import Event, Grant, RecordRejected, encode, format_ts

__all__ = ["admit_grant", "check_tick", "check_time", "make_room"]


def check_time(event: Event, now: float, max_ahead: float) -> None:
    """Raise ``timestamp_in_future`` if ``event`` is stamped past ``now + max_ahead``."""
    ts = event.issued_at if isinstance(event, Grant) else event.ts
    if ts > now + max_ahead:
        raise RecordRejected(
            "timestamp_in_future",
            f"stamped {format_ts(ts)}, {ts - now:,.0f} s past stream time {format_ts(now)} "
            f"(at most {max_ahead:g} s allowed)",
        )


def check_tick(tick_ts: float, now: float, max_ahead: float) -> None:
    """Raise ``timestamp_in_future`` for a tick record stamped past ``now + max_ahead``.

    Ticks move every agent's stream time on a partition, and anyone who can write the
    input topic can write one: one dated a year ahead would expire every grant there.
    """
    if tick_ts > now + max_ahead:
        raise RecordRejected(
            "timestamp_in_future",
            f"tick stamped {format_ts(tick_ts)}, {tick_ts - now:,.1f} s past the wall clock "
            f"(at most {max_ahead:g} s allowed)",
        )


def admit_grant(
    grant: Grant,
    *,
    current: Grant | None,
    task_ended: bool,
    others: Iterable[Grant] = (),
    forgotten: float | None = None,
) -> bool:
    """Whether ``grant`` is new (``True``) or the current one read again (``False``).

    ``current`` is the task's grant, ``task_ended`` whether the task ended (while it had
    that grant, if any), ``others`` the agent's grants for its other tasks, ``forgotten``
    the latest issue time of the grants of the agent's tasks forgotten early. Raises
    :class:`~intentwatch.contracts.RecordRejected` for a grant that must not be used.

    >>> forgotten = Grant(grant_id="g0", agent_id="spiffe://acme.org/agents/a1",
    ...     task_id="t0", credential_ids=["c0"], tools=["*"], targets=["*"],
    ...     data_labels=["*"], issued_at=100.0, expires_at=9e9, issuer="broker")
    >>> try:
    ...     admit_grant(forgotten, current=None, task_ended=False, forgotten=160.0)
    ... except RecordRejected as error:
    ...     print(error.code)
    task_forgotten
    """
    if current is not None and current.grant_id == grant.grant_id:
        if current == grant:
            return False
        raise RecordRejected(
            "grant_id_reused", f"grant {grant.grant_id} was accepted before with other content"
        )
    if current is not None and task_ended:
        raise RecordRejected(
            "task_ended", f"task {grant.task_id} ended under grant {current.grant_id}"
        )
    if current is None and not task_ended and forgotten is not None and (
            grant.issued_at <= forgotten):
        raise RecordRejected(
            "task_forgotten",
            f"grant {grant.grant_id} of task {grant.task_id}, unknown here, was issued "
            f"{format_ts(grant.issued_at)}, no later than a grant of a task of agent "
            f"{grant.agent_id} forgotten early ({format_ts(forgotten)}): it may be one of "
            "theirs",
        )
    if current is not None and grant.issued_at <= current.issued_at:
        raise RecordRejected(
            "grant_superseded",
            f"grant {grant.grant_id} (issued {format_ts(grant.issued_at)}) is not newer than "
            f"grant {current.grant_id} (issued {format_ts(current.issued_at)}) of task "
            f"{grant.task_id}",
        )
    reused = next((other for other in others if other.grant_id == grant.grant_id), None)
    if reused is not None:
        raise RecordRejected(
            "grant_id_reused", f"grant {grant.grant_id} was accepted for task {reused.task_id}"
        )
    return True


def make_room(
    grant: Grant,
    held: Mapping[str, Grant],
    ended: Callable[[str], bool],
    *,
    count: int,
    size: int,
) -> list[str]:
    """The tasks whose grants to forget so that ``grant`` fits beside the agent's ``held``
    ones (task id -> grant; ``grant``'s own task is replaced, not counted): tasks that
    ``ended``, the oldest grant first. Raises ``too_many_grants`` when the grants of open
    tasks alone leave no room for ``count`` grants of ``size`` bytes (encoded as JSON).

    >>> def grant(task, issued):
    ...     return Grant(grant_id=f"g-{task}", agent_id="spiffe://acme.org/agents/a1",
    ...         task_id=task, credential_ids=["c1"], tools=["crm.*"], targets=["*"],
    ...         data_labels=["internal"], issued_at=issued, expires_at=900.0, issuer="broker")
    >>> held = {"t1": grant("t1", 100.0), "t2": grant("t2", 50.0), "t3": grant("t3", 10.0)}
    >>> make_room(grant("t4", 200.0), held, ended={"t2", "t3"}.__contains__, count=2, size=4096)
    ['t3', 't2']
    >>> try:
    ...     make_room(grant("t4", 200.0), held, ended={"t3"}.__contains__, count=2, size=4096)
    ... except RecordRejected as error:
    ...     print(error.code)
    too_many_grants
    """
    others = {task_id: other for task_id, other in held.items() if task_id != grant.task_id}
    sizes = {task_id: _size(other) for task_id, other in others.items()}
    number, total = len(others) + 1, sum(sizes.values()) + _size(grant)
    forget: list[str] = []
    for task_id in sorted(filter(ended, others), key=lambda task_id: others[task_id].issued_at):
        if number <= count and total <= size:
            break
        forget.append(task_id)
        number, total = number - 1, total - sizes[task_id]
    if number > count or total > size:
        raise RecordRejected(
            "too_many_grants",
            f"agent {grant.agent_id} holds {number - 1} grants of open tasks "
            f"({total - _size(grant):,} bytes); with grant {grant.grant_id} that is past "
            f"{count} grants or {size:,} bytes",
        )
    return forget


def _size(grant: Grant) -> int:
    return len(encode(grant))
