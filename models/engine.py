"""The per-event engine: one code path for the stream, replay, notebooks and benchmarks.

``Engine.process(event)`` takes tool calls, grants and task events in time
order and returns an :class:`Outcome`: verdicts, revocations and audit
records to publish. ``Engine.tick(now)`` does the time-driven work: judging
calls whose grant never came, revoking expired grants, ending quiet tasks.

The engine owns the facts (grant conformance, task lifecycle, credentials,
staged learning); the :class:`~intentwatch.models.detection.Detector` owns the learned
scores. A grant violation decides on its own; otherwise the detector's score
is compared with the config's thresholds.

>>> from intentwatch.contracts import Grant, ToolCall
>>> engine = Engine()
>>> agent = "spiffe://acme.org/agents/support/a1"
>>> _ = engine.process(Grant(grant_id="g1", agent_id=agent, task_id="t1", credential_ids=["c1"],
...     intent="answer ticket 42", tools=["crm.*"], targets=["*.acme.org"],
...     data_labels=["internal"], issued_at=0.0, expires_at=900.0, issuer="broker"))
>>> out = engine.process(ToolCall(event_id="e1", ts=10.0, agent_id=agent, task_id="t1",
...     tool="iam.update_user_password", credential_id="c1"))
>>> out.verdicts[0].decision, out.revocations[0].reason_code
('revoke', 'intent_violation')
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from math import inf
from typing import Any, Literal

from intentwatch.contracts import (
    AuditRecord,
    Decision,
    Event,
    Grant,
    Reason,
    ReasonCode,
    RecordRejected,
    Revocation,
    TaskEvent,
    ToolCall,
    Verdict,
    encode,
    format_ts,
    shorten,
)
from intentwatch.models.admission import admit_grant, make_room
from intentwatch.models.catalogue import ToolCatalogue, ToolInfo
from intentwatch.models.config import ScoringConfig, load_config
from intentwatch.models.conformance import Violation, check_call, target_allowed, tool_allowed
from intentwatch.models.detection import Detector, ScoringState, TaskScoring
from intentwatch.models.learned import LearnedStateError
from intentwatch.models.limits import ShedKind, StateLimits

__all__ = ["Engine", "Outcome", "TaskState", "Tombstone", "task_key"]

_REVOCATION_NAMESPACE = uuid.UUID("5b1f4a5e-3c55-4d4e-9a8f-0c6f1d2e7a10")

# Which revocation reason a conformance violation leads to, strongest first.
_VIOLATION_REASON: dict[str, ReasonCode] = {
    "call_after_task_end": "credential_reuse",
    "credential_not_issued": "credential_reuse",
    "grant_expired": "ttl_expired",
    "tool_not_granted": "intent_violation",
    "target_not_granted": "intent_violation",
    "label_not_granted": "intent_violation",
    "grant_not_yet_valid": "policy",
    "grant_rejected": "policy",
    "no_grant": "policy",
}
_INTENT_CODES = frozenset({"intent", "unnamed_target", "privilege", "destination"})
"""Learned reasons that say the call leaves the approved intent (rather than the habit)."""
_MAX_REJECTED_GRANTS = 10_000
_TOMBSTONE_SECONDS = 24 * 3600.0
_REREAD_SECONDS = 60.0
"""How long (stream time) an ended task's tombstone keeps its calls' verdicts: what a
crash makes a worker read again is what it read since its last offset commit."""

TaskStatus = Literal["open", "completed", "failed", "cancelled", "expired"]


@dataclass
class Outcome:
    """What one event (or one tick) produced, in the order it should be published."""

    verdicts: list[Verdict] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.verdicts += other.verdicts
        self.revocations += other.revocations
        self.audits += other.audits

    def __bool__(self) -> bool:
        return bool(self.verdicts or self.revocations or self.audits)


@dataclass(frozen=True, kw_only=True)
class Tombstone:
    """What is kept of a task once it ended, for a day of stream time: enough to refuse
    its credentials, never to expire or audit it again, and to revoke each cause once.

    >>> Tombstone(status="completed", ended_at=500.0).revoked
    {}
    """

    status: TaskStatus
    ended_at: float
    revoked: dict[str, str] = field(default_factory=dict)
    """Reason code -> revocation id, as sent."""
    audit_pending: bool = False
    """It ended before its grant was read: the audit waits for the grant."""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Its calls' verdicts by event id, for ``_REREAD_SECONDS`` after its end."""
    issued_at: float | None = None
    """Its grant's issue time (None: no grant was read before it ended)."""


@dataclass
class TaskState:
    """What the engine and the detector know of one task, from its first event on: one
    object, whose fields (plain data) are kept in the ``open`` store so that a restart goes
    on where the task was, and whose :attr:`scoring` is the detector's part."""

    agent_id: str
    task_id: str
    status: TaskStatus = "open"
    started_at: float | None = None
    ended_at: float | None = None
    last_seen: float = 0.0
    staged: list[tuple[ToolCall, ToolInfo]] = field(default_factory=list)
    """Calls judged so far, learned when the task ends without revocation."""
    parked: list[ToolCall] = field(default_factory=list)
    """Calls logged before the task's grant, waiting for it."""
    staged_bytes: int = 0
    parked_bytes: int = 0
    usage_bytes: int = 0
    verdict_bytes: int = 0
    """Bytes (as JSON) of ``staged``, ``parked``, the usage (tools to ``out_of_grant``) and
    ``verdicts`` (kept within the staged calls' limits)."""
    revoked: dict[str, str] = field(default_factory=dict)  # reason code -> revocation id
    tools: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    out_of_grant: list[dict[str, str]] = field(default_factory=list)
    calls: int = 0
    max_score: float = 0.0
    audit_pending: bool = False
    """It ended before its grant was read: the audit waits for the grant."""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    """The verdicts of the calls judged so far, by event id (as many as are staged at
    most): a call read again (after a crash, what was read since the last offset commit
    is) gets the same verdict again, and is not counted or learned twice."""
    scoring_state: ScoringState | None = None
    """:attr:`scoring` as data, as of the last event that changed the task
    (:meth:`~intentwatch.models.detection.Detector.task_state`): after a restart the
    detector goes on from it, so the task's later calls (and one read again whose
    verdict was published but not this state) score as they would have."""

    def __post_init__(self) -> None:
        self.scoring: TaskScoring | None = None
        """What the detector keeps of the task while it scores its calls
        (:meth:`~intentwatch.models.detection.Detector.open_task`), from its first judged
        call to its end (learned when it goes quiet, it goes on); not a field: the ``open``
        store keeps :attr:`scoring_state`."""

    @property
    def is_over(self) -> bool:
        return self.status != "open"

    @property
    def revoked_for_cause(self) -> bool:
        """Revoked for something other than its normal end (the calls are not learned)."""
        return any(code not in ("task_completed", "ttl_expired") for code in self.revoked)


class Engine:
    """Judge tool calls against their grant and the agents' learned behaviour.

    Parameters
    ----------
    config
        Thresholds, timings and detector weights; the shipped default when omitted.
    grants
        Where active grants live: agent id -> {task id -> Grant}. The pipeline
        passes a faust table; values are assigned back after every change.
    open
        Where open tasks' :class:`TaskState` s live: :func:`task_key` -> TaskState, one
        value per task (bounded by the limits); written back after each event or tick
        that changed them.
    ended
        Where ended tasks' :class:`Tombstone` s live: :func:`task_key` -> Tombstone; like
        ``grants``, a table in the pipeline, so that after a restart an ended task's
        credentials are still refused and its grant not expired again.
    forgotten
        Agent id -> the latest issue time of the grants of its tasks whose tombstones were
        forgotten (past the tombstone limits, or a day after they ended): a grant issued
        no later, for a task the engine holds nothing of, may be one of theirs and is
        refused (``task_forgotten``); one number per agent, a table in the pipeline.
    learned
        Where what the detector learned of each agent lives: agent id -> its
        :meth:`~intentwatch.models.detection.Detector.agent_state`; read when the engine
        first meets the agent, written when a task's learning changed it.
    catalogue
        Operator knowledge of tools (action class, description).
    detector
        The learned layers; built from ``config`` when omitted.
    shed
        Where refusals and evictions past the config's ``limits``
        (:mod:`~intentwatch.models.limits`) are counted: (kind, ``"evicted"`` or
        ``"refused"``) -> how many; the pipeline's engines share one.
    """

    def __init__(
        self,
        config: ScoringConfig | None = None,
        *,
        grants: MutableMapping[str, dict[str, Grant]] | None = None,
        open: MutableMapping[str, TaskState] | None = None,
        ended: MutableMapping[str, Tombstone] | None = None,
        forgotten: MutableMapping[str, float] | None = None,
        learned: MutableMapping[str, bytes] | None = None,
        catalogue: ToolCatalogue | None = None,
        detector: Detector | None = None,
        shed: Counter[tuple[ShedKind, str]] | None = None,
    ) -> None:
        self.config = config or load_config()
        self.limits = StateLimits.from_dict(self.config.limits)
        self.shed: Counter[tuple[ShedKind, str]] = shed if shed is not None else Counter()
        self.grants: MutableMapping[str, dict[str, Grant]] = grants if grants is not None else {}
        self.open: MutableMapping[str, TaskState] = open if open is not None else {}
        self.ended: MutableMapping[str, Tombstone] = ended if ended is not None else {}
        self.forgotten: MutableMapping[str, float] = forgotten if forgotten is not None else {}
        self.learned: MutableMapping[str, bytes] = learned if learned is not None else {}
        self.met: OrderedDict[str, bool] = OrderedDict()
        """The agents whose learned state the detector holds (at most
        ``limits.resident_agents``), least recently met first -> whether it was taken from
        ``learned``."""
        self.catalogue = catalogue or ToolCatalogue()
        self.detector = detector or Detector(self.config)
        self._tasks: dict[tuple[str, str], TaskState] = {}
        """Every task the engine knows (open ones as in ``open``, ended ones for a day)."""
        self._order: dict[tuple[str, str], int] = {}
        """When each task entered ``_tasks`` (a sweep handles its tasks in that order)."""
        self._open_tasks: dict[str, dict[str, None]] = {}
        """Agent -> its open tasks (at most ``limits.open_tasks_per_agent``)."""
        self._graves: dict[str, _Graves] = {}
        """Agent -> its tombstones' sizes and ages (within the tombstone limits)."""
        self._rereadable: dict[str, deque[tuple[float, str]]] = {}
        """Agent -> (end, task) of its tombstones that keep their calls' verdicts, oldest
        first (for ``_REREAD_SECONDS``)."""
        self._entered = itertools.count()
        self._checks: list[tuple[float, int, str, str]] = []
        """(stream time, order, agent, task): when a sweep is next to look at a task (it may
        find nothing due yet); one live entry per task, the one in ``_check_at``."""
        self._check_at: dict[tuple[str, str], float] = {}
        self._changed: set[tuple[str, str]] = set()
        self._grace: list[tuple[float, str, str]] = []  # (deadline, agent, task), stream time
        self._expiries: list[tuple[float, str, str]] = []  # (expires_at, agent, task)
        self.last_sweep = float("-inf")
        """Stream time of the last sweep for quiet tasks (kept with the stream time)."""
        self._rejected: OrderedDict[tuple[str, str], str] = OrderedDict()
        """Why the last grant record naming (agent, task) was rejected, newest last."""

    # -- events ---------------------------------------------------------------------------

    def process(self, event: Event, now: float | None = None) -> Outcome:
        """Take one event, in the order of its agent's log.

        ``now`` is stream time, how far the agent's log has been read (the event's time
        when omitted). A call whose grant has not been read yet waits until stream time
        is ``grace_seconds`` past the call: the grant may follow it in the log.

        Raises :class:`~intentwatch.contracts.RecordRejected` for a grant that must not
        enter state (:mod:`~intentwatch.models.admission`): older than the task's,
        reusing an id, or for a task that ended.
        """
        if isinstance(event, ToolCall):
            outcome = self._on_call(event, event.ts if now is None else now)
        elif isinstance(event, Grant):
            outcome = self._on_grant(event, event.issued_at if now is None else now)
        elif isinstance(event, TaskEvent):
            outcome = self._on_task_event(event)
        else:
            raise TypeError(f"not an intentwatch event: {type(event).__name__}")
        self._write_back()
        return outcome

    def tick(self, now: float) -> Outcome:
        """Do what is due by stream time ``now``: judge calls whose grant never came,
        revoke expired grants, end quiet tasks and forget long-finished ones."""
        outcome = Outcome()
        while self._grace and self._grace[0][0] <= now:
            _, agent_id, task_id = heapq.heappop(self._grace)
            self._judge_parked(agent_id, task_id, outcome)
        while self._expiries and self._expiries[0][0] <= now:
            when, agent_id, task_id = heapq.heappop(self._expiries)
            self._expire(agent_id, task_id, when, outcome)
        if now - self.last_sweep >= self.config.quiet_period_seconds / 4:
            self.last_sweep = now
            self._sweep(now, outcome)
        self._write_back()
        return outcome

    def restore(self, keep: Callable[[str], bool] = lambda agent_id: True) -> None:
        """Take over the open tasks, grants and tombstones of the agents ``keep`` accepts
        (after recovery or rebalance): parked calls wait for their grants again, the
        grants of open tasks expire, ended tasks stay ended. (What the detector keeps of a
        task this engine already held is kept.)"""
        scoring = {key: task.scoring for key, task in self._tasks.items()
                   if task.scoring is not None}
        self._tasks.clear()
        self._order.clear()
        self._open_tasks.clear()
        self._checks.clear()
        self._check_at.clear()
        for task in self.open.values():
            if keep(task.agent_id):
                if task.scoring is None:
                    task.scoring = scoring.get((task.agent_id, task.task_id))
                self._enter((task.agent_id, task.task_id), task)
        self._graves.clear()
        self._rereadable.clear()
        for key, tombstone in sorted(self.ended.items(), key=lambda item: item[1].ended_at):
            agent_id, task_id = key.split("|", 1)
            if keep(agent_id):
                self._task(agent_id, task_id)
                self._graves.setdefault(agent_id, _Graves(agent_id)).add(task_id, tombstone)
                if tombstone.verdicts:
                    self._rereadable.setdefault(agent_id, deque()).append(
                        (tombstone.ended_at, task_id)
                    )
        self._grace = [
            (task.parked[0].ts + self.config.grace_seconds, *key)
            for key, task in self._tasks.items() if task.parked
        ]
        heapq.heapify(self._grace)
        self._expiries = []
        for agent_id, grants in self.grants.items():
            if not keep(agent_id):
                continue
            for task_id, grant in grants.items():
                if not self._task(agent_id, task_id).is_over:
                    self._expiries.append((grant.expires_at, agent_id, task_id))
        heapq.heapify(self._expiries)
        self._changed.clear()

    def grant_rejected(self, agent_id: str, task_id: str, why: str) -> None:
        """Note that a grant record naming this task was rejected (``why``, e.g.
        ``"unsigned: ..."``): a call judged without a grant then names that reason. It
        changes no decision; a later valid grant clears it."""
        self._rejected[(agent_id, task_id)] = why
        self._rejected.move_to_end((agent_id, task_id))
        if len(self._rejected) > _MAX_REJECTED_GRANTS:
            self._rejected.popitem(last=False)

    # -- grants and task events -----------------------------------------------------------

    def _on_grant(self, grant: Grant, now: float) -> Outcome:
        agent_id = grant.agent_id
        tasks = dict(self.grants.get(agent_id) or {})
        task = self._tasks.get((agent_id, grant.task_id))
        if not admit_grant(
            grant, current=tasks.get(grant.task_id), task_ended=task is not None and task.is_over,
            forgotten=self.forgotten.get(agent_id),
            others=(other for task_id, other in tasks.items() if task_id != grant.task_id),
        ):
            return Outcome()
        victim = self._victim(agent_id) if task is None else None
        try:  # decided before anything changes: a refused grant leaves no trace
            forget = make_room(
                grant, tasks, lambda task_id: task_id == victim or self._is_over(agent_id, task_id),
                count=self.limits.grants_per_agent, size=self.limits.grant_bytes_per_agent,
            )
        except RecordRejected:
            self.shed["grant", "refused"] += 1
            raise
        outcome = Outcome()
        if victim is not None:
            self._evict(agent_id, victim, grant.task_id, now, outcome)
        tasks = dict(self.grants.get(agent_id) or {})
        for task_id in forget:
            if tasks.pop(task_id, None) is not None:
                self.shed["grant", "evicted"] += 1
        self._rejected.pop((agent_id, grant.task_id), None)
        tasks[grant.task_id] = grant
        self.grants[agent_id] = tasks
        task = self._task(agent_id, grant.task_id)
        task.last_seen = max(task.last_seen, now)
        heapq.heappush(self._expiries, (grant.expires_at, agent_id, grant.task_id))
        self._judge_parked(agent_id, grant.task_id, outcome)
        if task.is_over and task.ended_at is not None:
            # the task's end was logged before its grant (the credential broker published
            # late): its credentials end now, and its audit can be written
            self._revoke(
                task, grant, "task_completed", task.ended_at, outcome,
                reason=f"task {task.task_id} {task.status} before its grant was read; its "
                       "credentials end with it",
                score=0.0, evidence=[grant.grant_id],
            )
            if task.audit_pending:
                task.audit_pending = False
                outcome.audits.append(self._audit(task, grant))
            self._bury(task, outcome)
        return outcome

    def _on_task_event(self, event: TaskEvent) -> Outcome:
        outcome = Outcome()
        if event.status == "started":
            self._open_room(event.agent_id, event.task_id, event.ts, outcome)
        task = self._task(event.agent_id, event.task_id)
        task.last_seen = max(task.last_seen, event.ts)
        if event.status == "started":
            task.started_at = task.started_at or event.ts
            return outcome
        if task.is_over:
            return outcome
        self._judge_parked(event.agent_id, event.task_id, outcome)
        grant = self._grant(event.agent_id, event.task_id)
        if grant is not None:
            self._revoke(
                task, grant, "task_completed", event.ts, outcome,
                reason=f"task {event.task_id} {event.status}; its credentials end with it",
                score=0.0, evidence=[event.event_id],
            )
        self._end(task, event.status, event.ts, grant, outcome)
        return outcome

    def _expire(self, agent_id: str, task_id: str, when: float, outcome: Outcome) -> None:
        grant = self._grant(agent_id, task_id)
        task = self._tasks.get((agent_id, task_id))
        if grant is None or grant.expires_at != when or task is None or task.is_over:
            return
        self._judge_parked(agent_id, task_id, outcome)
        self._revoke(
            task, grant, "ttl_expired", when, outcome,
            reason=f"grant {grant.grant_id} for task {task_id} expired at {format_ts(when)}",
            score=0.0, evidence=[grant.grant_id],
        )
        self._end(task, "expired", when, grant, outcome)

    def _open_room(self, agent_id: str, task_id: str, now: float, outcome: Outcome) -> None:
        """Before ``task_id`` opens: if it is new and its agent has no room, end its least
        recently active open task (:meth:`_evict`)."""
        if (agent_id, task_id) not in self._tasks:
            victim = self._victim(agent_id)
            if victim is not None:
                self._evict(agent_id, victim, task_id, now, outcome)

    def _victim(self, agent_id: str) -> str | None:
        """The open task a new one of ``agent_id`` displaces: none while the agent has fewer
        than ``open_tasks_per_agent``, else the one seen least recently (the first to have
        entered among equals)."""
        tasks = self._open_tasks.get(agent_id, {})
        if len(tasks) < self.limits.open_tasks_per_agent:
            return None
        return min(tasks, key=lambda task_id: (
            self._tasks[agent_id, task_id].last_seen, self._order[agent_id, task_id]))

    def _evict(
        self, agent_id: str, task_id: str, for_task: str, now: float, outcome: Outcome
    ) -> None:
        """End an open task to make room for ``for_task``, failing closed: its waiting calls
        are judged (without the grant they waited for), its credentials revoked
        (``policy``), its calls not learned, its audit written."""
        task = self._tasks[agent_id, task_id]
        grant = self._grant(agent_id, task_id)
        self.shed["task", "evicted"] += 1
        self._judge_parked(agent_id, task_id, outcome)
        self._revoke(
            task, grant, "policy", now, outcome,
            reason=f"task {task_id} ended to make room for task {for_task}: its agent had "
                   f"{self.limits.open_tasks_per_agent} open tasks, this one the least "
                   "recently active; its credentials end with it",
            score=0.0, evidence=[grant.grant_id] if grant is not None else [],
        )
        self._end(task, "expired", now, grant, outcome)

    def _end(
        self, task: TaskState, status: TaskStatus, ts: float, grant: Grant | None, outcome: Outcome
    ) -> None:
        task.status = status
        task.ended_at = ts
        self._changed.add((task.agent_id, task.task_id))
        self._closed(task.agent_id, task.task_id)
        self._learn(task, ended=True)
        if grant is None:
            task.audit_pending = True
        else:
            outcome.audits.append(self._audit(task, grant))
            # what the audit said is not needed again (as after a restart)
            task.tools, task.targets, task.labels, task.out_of_grant = {}, {}, {}, []
            task.usage_bytes = 0
        self._bury(task, outcome)

    def _sweep(self, now: float, outcome: Outcome) -> None:
        """End quiet open tasks (learning them) and forget long-finished or orphan ones
        (writing the audit of a task whose grant never came).

        Only the tasks whose check is due are looked at (a task seen since goes back in
        the queue), in the order they entered: the same as looking at every task."""
        quiet = self.config.quiet_period_seconds
        due = []
        while self._checks and self._checks[0][0] <= now:
            when, order, agent_id, task_id = heapq.heappop(self._checks)
            if self._check_at.get((agent_id, task_id)) == when:  # else a stale entry
                del self._check_at[agent_id, task_id]
                due.append((order, (agent_id, task_id)))
        for _, key in sorted(due):
            task = self._tasks[key]
            idle = now - max(task.last_seen, task.ended_at or task.last_seen)
            if idle > _TOMBSTONE_SECONDS and (task.is_over or self._grant(*key) is None):
                self._forget(key, outcome)
                self._forget_tombstone(*key)
                continue
            if task.staged and idle >= quiet:
                self._learn(task, ended=False)
                self._changed.add(key)
            self._check(key, task, now)

    def _learn(self, task: TaskState, *, ended: bool) -> None:
        """Learn the task's staged calls (unless it was revoked for cause): when it ended,
        or went quiet (its later calls are learned when it ends)."""
        self._meet(task.agent_id)
        self.detector.end_task(
            task.agent_id, self._scoring(task), task.staged, learn=not task.revoked_for_cause
        )
        if ended:
            task.scoring, task.scoring_state = None, None
        task.staged, task.staged_bytes = [], 0

    def _scoring(self, task: TaskState) -> TaskScoring | None:
        """What the detector keeps of ``task``: in memory, else as its state last kept it
        (after a restart), else nothing yet."""
        if task.scoring is None and task.scoring_state is not None:
            task.scoring = self.detector.load_task_state(task.scoring_state)
        return task.scoring

    # -- tool calls -----------------------------------------------------------------------

    def _on_call(self, call: ToolCall, now: float) -> Outcome:
        outcome = Outcome()
        key = (call.agent_id, call.task_id)
        known = self._tasks.get(key)  # (a new task enters below, once there is room for it)
        if known is not None and call.event_id in known.verdicts:  # read again: judged already
            self._judge(call, outcome)
            return outcome
        self._open_room(*key, now, outcome)
        if self._grant(*key) is None and not self._task(*key).is_over:
            task = self._task(*key)
            size = _stored_size(call)
            if (len(task.parked) >= self.limits.parked_calls_per_task
                    or task.parked_bytes + size > self.limits.parked_bytes_per_task):
                # no grant came for so many: judge them now, as without a grant
                self.shed["parked_call", "evicted"] += len(task.parked) + 1
                self._judge_parked(*key, outcome)
                self._judge(call, outcome)
                return outcome
            task.parked.append(call)
            task.parked_bytes += size
            task.last_seen = max(task.last_seen, call.ts)  # active, if waiting
            if len(task.parked) == 1:
                deadline = max(call.ts, now) + self.config.grace_seconds
                heapq.heappush(self._grace, (deadline, *key))
            return outcome
        self._judge(call, outcome)
        return outcome

    def _judge_parked(self, agent_id: str, task_id: str, outcome: Outcome) -> None:
        task = self._tasks.get((agent_id, task_id))
        if task is None or not task.parked:
            return
        calls, task.parked, task.parked_bytes = task.parked, [], 0
        self._changed.add((agent_id, task_id))
        for call in calls:
            self._judge(call, outcome)

    def _judge(self, call: ToolCall, outcome: Outcome) -> None:
        task = self._task(call.agent_id, call.task_id)
        judged = task.verdicts.get(call.event_id)
        if judged is not None:  # read again (after a crash): the same verdict, nothing more
            outcome.verdicts.append(judged)
            return
        task.last_seen = max(task.last_seen, call.ts)
        grant = self._grant(call.agent_id, call.task_id)
        tool = self.catalogue.resolve(call)
        self._meet(call.agent_id)
        scoring = self._scoring(task)
        if scoring is None:
            scoring = task.scoring = self.detector.open_task(call.agent_id, grant)
        assessment = self.detector.assess(call, grant, tool, scoring)
        violations = self._violations(call, task, grant)

        reasons = assessment.reasons
        if (violations or task.revoked_for_cause) and assessment.explain is not None:
            reasons = assessment.explain()  # revoked all the same: the sentences are needed
        reasons = sorted(reasons, key=lambda r: r.weight, reverse=True)
        decision: Decision
        rule = assessment.rule
        if violations:
            score, decision, rule = 1.0, "revoke", "grant"
            reasons = violations + reasons
        elif task.revoked_for_cause:
            score, decision, rule = 1.0, "revoke", "task_revoked"
            already = Reason(code="task_revoked", weight=1.0,
                             detail=f"task {call.task_id} was already revoked")
            reasons = [already, *reasons]
        else:
            score = assessment.score
            decision = (
                "revoke" if score >= self.config.revoke_threshold
                else "alert" if score >= self.config.alert_threshold
                else "allow"
            )
        verdict = Verdict(
            event_id=call.event_id, agent_id=call.agent_id, task_id=call.task_id,
            tool=call.tool, ts=format_ts(call.ts), score=score, decision=decision,
            reasons=reasons, components=assessment.components, model_version=self.config.version,
            rule=rule,
            semconv_version=call.semconv_version,
        )
        outcome.verdicts.append(verdict)
        size = _stored_size(verdict)
        if (len(task.verdicts) < self.limits.staged_calls_per_task
                and task.verdict_bytes + size <= self.limits.staged_bytes_per_task):
            task.verdicts[call.event_id] = verdict
            task.verdict_bytes += size
        self._record_usage(task, call, violations, score)
        if not task.is_over:
            self._stage(task, call, tool)
        if decision == "revoke" and not task.revoked_for_cause:
            if violations:
                code = _VIOLATION_REASON[violations[0].code]
            else:
                code = "intent_violation" if reasons[0].code in _INTENT_CODES else "anomaly"
            if code == "ttl_expired" and call.credential_id is not None:
                code = "credential_reuse"  # presenting a credential that has expired
            self._revoke(
                task, grant, code, call.ts, outcome, reason=reasons[0].detail, score=score,
                evidence=[call.event_id], extra_credentials=[call.credential_id],
            )

    def _stage(self, task: TaskState, call: ToolCall, tool: ToolInfo) -> None:
        """Keep ``call`` to learn when the task ends, if the task's room for calls allows;
        a call past it is judged all the same, just not learned."""
        size = _stored_size((call, tool))
        if (len(task.staged) >= self.limits.staged_calls_per_task
                or task.staged_bytes + size > self.limits.staged_bytes_per_task):
            self.shed["staged_call", "refused"] += 1
            return
        task.staged.append((call, tool))
        task.staged_bytes += size
        if len(task.staged) == 1:  # it can go quiet now
            self._check((call.agent_id, call.task_id), task, float("-inf"))

    def _violations(self, call: ToolCall, task: TaskState, grant: Grant | None) -> list[Violation]:
        if task.is_over and call.ts > (task.ended_at or 0.0):
            when = format_ts(task.ended_at) if task.ended_at is not None else "earlier"
            return [Violation(
                code="call_after_task_end", weight=1.0,
                detail=f"task {call.task_id} ended ({task.status}) at {when}; "
                       f"this call{_presenting(call)} came after",
            )]
        rejected = self._rejected.get((call.agent_id, call.task_id))
        if grant is None and rejected is not None:
            return [Violation(
                code="grant_rejected", weight=1.0,
                detail=f"grant rejected: {rejected}; task {call.task_id} has no valid grant",
            )]
        if grant is None:
            return [Violation(
                code="no_grant", weight=1.0,
                detail=f"no grant for task {call.task_id} arrived within "
                       f"{self.config.grace_seconds:g} s of the call",
            )]
        violations = check_call(call, grant, skew=self.config.clock_skew_seconds)
        violations.sort(key=lambda v: list(_VIOLATION_REASON).index(v.code))
        return violations

    def _record_usage(
        self, task: TaskState, call: ToolCall, violations: list[Violation], score: float
    ) -> None:
        task.calls += 1
        task.max_score = max(task.max_score, score)
        used = [(task.tools, call.tool), *((task.labels, label) for label in call.data_labels)]
        if call.target is not None:
            used.insert(1, (task.targets, call.target))
        for counts, name in used:
            if name in counts:
                counts[name] += 1
            elif self._room_for_usage(task, _stored_size({name: 1})):
                counts[name] = 1
        for violation in violations:
            entry = {"event_id": call.event_id, "code": violation.code, "tool": call.tool,
                     "target": call.target or ""}
            if self._room_for_usage(task, _stored_size(entry)):
                task.out_of_grant.append(entry)

    def _room_for_usage(self, task: TaskState, size: int) -> bool:
        """Whether the task's usage (what its audit lists) has room for ``size`` more bytes;
        past ``usage_bytes_per_task`` new entries are only counted (``calls`` counts all)."""
        if task.usage_bytes + size > self.limits.usage_bytes_per_task:
            self.shed["usage", "refused"] += 1
            return False
        task.usage_bytes += size
        return True

    # -- revocations and audit ------------------------------------------------------------

    def _revoke(
        self,
        task: TaskState,
        grant: Grant | None,
        code: ReasonCode,
        ts: float,
        outcome: Outcome,
        *,
        reason: str,
        score: float,
        evidence: list[str],
        extra_credentials: Iterable[str | None] = (),
    ) -> None:
        if code in task.revoked:
            return
        revocation_id = str(uuid.uuid5(
            _REVOCATION_NAMESPACE, f"{task.agent_id}|{task.task_id}|{code}"
        ))
        task.revoked[code] = revocation_id
        self._changed.add((task.agent_id, task.task_id))
        if task.is_over:  # a late call or grant: said once, across restarts too
            self._bury(task, outcome)
        credentials = list(grant.credential_ids) if grant is not None else []
        credentials += [c for c in extra_credentials if c is not None and c not in credentials]
        outcome.revocations.append(Revocation(
            revocation_id=revocation_id, agent_id=task.agent_id, task_id=task.task_id,
            credential_ids=credentials, reason_code=code, reason=shorten(reason), score=score,
            evidence=evidence, event_ts=ts, session_token=grant.token if grant else None,
        ))

    def revocation_lost(self, revocation: Revocation) -> None:
        """``revocation`` could not be published: its task is not revoked for that cause,
        so the next violation revokes again (with the same revocation id)."""
        task = self._tasks.get((revocation.agent_id, revocation.task_id))
        code = revocation.reason_code
        if task is not None and task.revoked.get(code) == revocation.revocation_id:
            del task.revoked[code]
            self._changed.add((revocation.agent_id, revocation.task_id))
            if task.is_over:
                self._bury(task)
            self._write_back()

    def _audit(self, task: TaskState, grant: Grant | None) -> AuditRecord:
        granted = {
            "tools": list(grant.tools) if grant else [],
            "targets": list(grant.targets) if grant else [],
            "data_labels": list(grant.data_labels) if grant else [],
        }
        unused = {
            "tools": [
                p for p in granted["tools"] if not any(tool_allowed([p], t) for t in task.tools)
            ],
            "targets": [
                p for p in granted["targets"]
                if not any(target_allowed([p], t) for t in task.targets)
            ],
            "data_labels": [label for label in granted["data_labels"] if label not in task.labels],
        }
        return AuditRecord(
            agent_id=task.agent_id, task_id=task.task_id,
            grant_id=grant.grant_id if grant else None, intent=grant.intent if grant else "",
            granted=granted,
            used={"tools": dict(task.tools), "targets": dict(task.targets),
                  "data_labels": dict(task.labels)},
            unused=unused, out_of_grant=task.out_of_grant, calls=task.calls,
            max_score=task.max_score, revoked=task.revoked_for_cause,
            revocation_reasons=list(task.revoked),
            ended=task.status if task.status != "open" else "expired",
            started_at=format_ts(task.started_at) if task.started_at is not None else None,
            ended_at=format_ts(task.ended_at if task.ended_at is not None else task.last_seen),
        )

    # -- state ----------------------------------------------------------------------------

    def _task(self, agent_id: str, task_id: str) -> TaskState:
        """The task's state, made or taken from its tombstone; written back after the event."""
        key = (agent_id, task_id)
        self._changed.add(key)
        task = self._tasks.get(key)
        if task is None:
            tombstone = self.ended.get(task_key(agent_id, task_id))
            task = TaskState(agent_id, task_id)
            if tombstone is not None:
                task = TaskState(
                    agent_id, task_id, status=tombstone.status, ended_at=tombstone.ended_at,
                    last_seen=tombstone.ended_at, revoked=dict(tombstone.revoked),
                    audit_pending=tombstone.audit_pending, verdicts=dict(tombstone.verdicts),
                    verdict_bytes=sum(map(_stored_size, tombstone.verdicts.values())),
                )
            self._enter(key, task)
        return task

    def _enter(self, key: tuple[str, str], task: TaskState) -> None:
        self._tasks[key] = task
        self._order[key] = next(self._entered)
        if not task.is_over:
            self._open_tasks.setdefault(key[0], {})[key[1]] = None
        self._check(key, task, float("-inf"))

    def _forget(self, key: tuple[str, str], outcome: Outcome | None) -> None:
        """Forget a task and its grant (its tombstone is the caller's); write the audit that
        waited for a grant that never came."""
        task = self._tasks.pop(key)
        del self._order[key]
        self._check_at.pop(key, None)
        self._closed(*key)
        self._changed.add(key)
        self._drop_grant(*key)
        if task.audit_pending and outcome is not None:
            outcome.audits.append(self._audit(task, None))

    def _check(self, key: tuple[str, str], task: TaskState, now: float) -> None:
        """Schedule the sweep's next look at ``task``: when it goes quiet (staged calls),
        else when it may be forgotten; after ``now`` (the next sweep at the earliest)."""
        base = max(task.last_seen, task.ended_at or task.last_seen)
        when = base + (self.config.quiet_period_seconds if task.staged else _TOMBSTONE_SECONDS)
        if when <= now:  # due but kept (an open task with a grant): look again next sweep
            when = now + self.config.quiet_period_seconds / 4
        scheduled = self._check_at.get(key)
        if scheduled is None or when < scheduled:
            self._check_at[key] = when
            heapq.heappush(self._checks, (when, self._order[key], *key))

    def _meet(self, agent_id: str) -> None:
        """Before the detector judges or learns ``agent_id``: unless it holds the agent,
        take what was learned of it from ``learned`` (state of another version or config:
        it starts afresh), making room first (:meth:`_evict_agent`)."""
        met = self.met
        if agent_id in met:
            met.move_to_end(agent_id)
            return
        while len(met) >= self.limits.resident_agents:
            self._evict_agent()
        try:  # an incomplete record (parts of it lost) is refused like another version
            state = self.learned.get(agent_id)
            if state is not None:
                self.detector.load_agent_state(state)
        except LearnedStateError:
            state = None
        met[agent_id] = state is not None

    def _evict_agent(self) -> None:
        """The detector forgets the agent met least recently; its learned state, if it
        changed since it was last written, goes to ``learned`` first (where the agent's
        next meeting reads it: what the detector holds of it then is what it forgot)."""
        agent_id, _ = self.met.popitem(last=False)
        state = self.detector.forget_agent(agent_id)
        if state is not None:
            self.learned[agent_id] = state
        self.shed["agent", "evicted"] += 1

    def _closed(self, agent_id: str, task_id: str) -> None:
        """The task is no longer one of its agent's open tasks."""
        tasks = self._open_tasks.get(agent_id)
        if tasks is not None:
            tasks.pop(task_id, None)
            if not tasks:
                del self._open_tasks[agent_id]

    def _write_back(self) -> None:
        """Put the open tasks this event or tick touched into ``open`` (dropping ended
        ones), and what the detector learned of agents since into ``learned``."""
        for agent_id in self.detector.take_learned_agents():
            self.learned[agent_id] = self.detector.agent_state(agent_id)
        for agent_id, task_id in self._changed:
            task = self._tasks.get((agent_id, task_id))
            key = task_key(agent_id, task_id)
            if task is not None and not task.is_over:
                if task.scoring is not None:
                    task.scoring_state = self.detector.task_state(task.scoring)
                self.open[key] = task
            elif key in self.open:
                del self.open[key]
        self._changed.clear()

    def _bury(self, task: TaskState, outcome: Outcome | None = None) -> None:
        """Keep what ends with the task (its tombstone) where restarts find it; past the
        agent's room for tombstones the oldest other ones are forgotten, tasks, grants and
        all (a later call of one has no grant: it is revoked)."""
        assert task.ended_at is not None
        grant = self._grant(task.agent_id, task.task_id)
        tombstone = Tombstone(
            status=task.status, ended_at=task.ended_at, revoked=dict(task.revoked),
            audit_pending=task.audit_pending, verdicts=dict(task.verdicts),
            issued_at=grant.issued_at if grant is not None else None,
        )
        key = task_key(task.agent_id, task.task_id)
        self.ended[key] = tombstone
        graves = self._graves.setdefault(task.agent_id, _Graves(task.agent_id))
        graves.add(task.task_id, tombstone)
        if tombstone.verdicts:
            self._rereadable.setdefault(task.agent_id, deque()).append(
                (task.ended_at, task.task_id)
            )
        self._forget_verdicts(task.agent_id, task.ended_at - _REREAD_SECONDS)
        limits = self.limits
        for task_id in graves.oldest_past(
            limits.tombstones_per_agent, limits.tombstone_bytes_per_agent, keep=task.task_id
        ):
            self._forget((task.agent_id, task_id), outcome)
            self._forget_tombstone(task.agent_id, task_id)
            self.shed["tombstone", "evicted"] += 1

    def _forget_verdicts(self, agent_id: str, before: float) -> None:
        """The agent's tasks that ended before ``before`` forget their calls' verdicts
        (tombstone and memory): no call of theirs is read again after a crash any more."""
        queue = self._rereadable.get(agent_id)
        while queue and queue[0][0] < before:
            _, task_id = queue.popleft()
            task = self._tasks.get((agent_id, task_id))
            if task is not None:
                task.verdicts, task.verdict_bytes = {}, 0
            key = task_key(agent_id, task_id)
            tombstone = self.ended.get(key)
            if tombstone is not None and tombstone.verdicts:
                stripped = replace(tombstone, verdicts={})
                self.ended[key] = stripped
                self._graves[agent_id].add(task_id, stripped)
        if not queue:
            self._rereadable.pop(agent_id, None)

    def _forget_tombstone(self, agent_id: str, task_id: str) -> None:
        graves = self._graves.get(agent_id)
        if graves is not None and graves.remove(task_id) and not graves.sizes:
            del self._graves[agent_id]
        tombstone = self.ended.pop(task_key(agent_id, task_id), None)
        issued_at = tombstone.issued_at if tombstone is not None else None
        if issued_at is not None and issued_at > self.forgotten.get(agent_id, -inf):
            self.forgotten[agent_id] = issued_at

    def _is_over(self, agent_id: str, task_id: str) -> bool:
        """Whether the task ended (or is no longer known: its grant is an orphan)."""
        task = self._tasks.get((agent_id, task_id))
        return task is None or task.is_over

    def _grant(self, agent_id: str, task_id: str) -> Grant | None:
        tasks = self.grants.get(agent_id)
        return tasks.get(task_id) if tasks else None

    def _drop_grant(self, agent_id: str, task_id: str) -> None:
        tasks = dict(self.grants.get(agent_id) or {})
        if tasks.pop(task_id, None) is not None:
            if tasks:
                self.grants[agent_id] = tasks
            else:
                del self.grants[agent_id]


class _Graves:
    """One agent's tombstones: the bytes each takes as stored (key too), and their ages.

    >>> graves = _Graves("spiffe://acme.org/agents/a1")
    >>> for n in range(3):
    ...     graves.add(f"t{n}", Tombstone(status="completed", ended_at=float(10 - n)))
    >>> graves.oldest_past(count=2, size=10_000, keep="t2")
    ['t1']
    """

    def __init__(self, agent_id: str) -> None:
        self._key_bytes = len(task_key(agent_id, "").encode())
        self.sizes: dict[str, tuple[float, int]] = {}
        """Task id -> (when it ended, bytes of its tombstone and key)."""
        self.total = 0
        self._ages: list[tuple[float, str]] = []  # a heap; entries of removed ones are stale

    def add(self, task_id: str, tombstone: Tombstone) -> None:
        size = self._key_bytes + len(task_id.encode()) + _stored_size(tombstone)
        known = self.sizes.get(task_id)
        if known is None or known[0] != tombstone.ended_at:
            heapq.heappush(self._ages, (tombstone.ended_at, task_id))
        self.total += size - (known[1] if known is not None else 0)
        self.sizes[task_id] = (tombstone.ended_at, size)

    def remove(self, task_id: str) -> bool:
        known = self.sizes.pop(task_id, None)
        if known is not None:
            self.total -= known[1]
        if len(self._ages) > 2 * len(self.sizes) + 64:  # mostly stale: rebuild
            self._ages = [(ended_at, task_id) for task_id, (ended_at, _) in self.sizes.items()]
            heapq.heapify(self._ages)
        return known is not None

    def oldest_past(self, count: int, size: int, *, keep: str) -> list[str]:
        """The tombstones to forget, the oldest first (never ``keep``), for the rest to be
        at most ``count`` of at most ``size`` bytes in all."""
        forget: list[str] = []
        held = len(self.sizes) - count, self.total - size
        kept = []
        while (held[0] > 0 or held[1] > 0) and self._ages:
            entry = heapq.heappop(self._ages)
            ended_at, task_id = entry
            known = self.sizes.get(task_id)
            if known is None or known[0] != ended_at or task_id in forget:
                continue  # stale
            if task_id == keep:
                kept.append(entry)
                continue
            forget.append(task_id)
            held = held[0] - 1, held[1] - known[1]
        for entry in kept:
            heapq.heappush(self._ages, entry)
        return forget


def task_key(agent_id: str, task_id: str) -> str:
    """The ``open`` store's key of a task: its agent (a SPIFFE ID never holds ``|``) and id.

    >>> task_key("spiffe://acme.org/agents/a1", "t1")
    'spiffe://acme.org/agents/a1|t1'
    """
    return f"{agent_id}|{task_id}"


def _stored_size(value: Any) -> int:
    """Bytes of ``value`` as JSON (the state tables' msgpack takes no more)."""
    return len(encode(value))


def _presenting(call: ToolCall) -> str:
    return f" presenting credential {call.credential_id}" if call.credential_id else ""
