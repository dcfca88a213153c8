"""The worker's Prometheus metrics, served at ``/metrics`` on its web port.

Base units (seconds, records) and bounded labels only: decisions, reason codes,
rejection codes, topics, partitions, tables; never an agent, task or credential
id. Counters and histograms move through small hooks in the pipeline; consumer
lag and table sizes are sampled when Prometheus scrapes.

>>> from intentwatch.contracts import TaskEvent
>>> metrics = Metrics(wall=lambda: 12.5)
>>> metrics.consumed("intentwatch.tasks.v1", partition=0, offset=41, timestamp=10.0)
>>> metrics.decoded(TaskEvent(event_id="e1", ts=10.0, agent_id="spiffe://acme.org/a1",
...     task_id="t1", status="started"))
>>> sample = metrics.registry.get_sample_value
>>> sample("intentwatch_records_consumed_total", {"topic": "intentwatch.tasks.v1"})
1.0
>>> sample("intentwatch_event_lag_seconds_sum", {"event": "task"})
2.5
>>> sample("intentwatch_verdicts_total", {"decision": "revoke"})  # known labels start at 0
0.0
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from intentwatch.contracts import (
    REASON_CODES,
    Decision,
    Event,
    Grant,
    Revocation,
    TaskEvent,
    ToolCall,
)
from intentwatch.models.engine import Outcome
from intentwatch.models.limits import SHED, ShedKind
from intentwatch.models.replay import event_time
from intentwatch.pipeline.decoding import reason_of
from intentwatch.tokens.grants import GRANT_REJECTION_CODES, GrantRejected

__all__ = ["Metrics"]

_EVENT_KINDS: dict[type, str] = {ToolCall: "toolcall", Grant: "grant", TaskEvent: "task"}
_ENGINE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
_LAG_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)


class Metrics:
    """The metrics of one worker, in a registry of their own (one per pipeline).

    ``consumer`` returns the faust consumer (assignment, high watermarks, positions)
    and ``tables`` holds the state tables, both read at scrape time; ``topics`` are
    the input topics whose lag is reported; ``wall`` is the clock lags are measured by;
    ``shed`` is the engines' count of state refused or evicted past their limits.
    """

    def __init__(
        self,
        *,
        consumer: Callable[[], Any] | None = None,
        topics: Collection[str] = (),
        tables: Mapping[str, Any] | None = None,
        shed: Mapping[tuple[ShedKind, str], int] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._topics = frozenset(topics)
        self._tables = tables if tables is not None else {}
        self._wall = wall
        self._next: dict[tuple[str, int], tuple[int, float]] = {}
        """(topic, partition) -> (next offset to process, timestamp of the last record)."""
        self.registry = r = CollectorRegistry()
        self.records = Counter(
            "intentwatch_records_consumed", "Input records read, by topic.", ["topic"], registry=r
        )
        self.verdicts = Counter(
            "intentwatch_verdicts", "Verdicts published, by decision.", ["decision"], registry=r
        )
        self.revocations = Counter(
            "intentwatch_revocations", "Revocations published, by reason code.", ["reason"],
            registry=r,
        )
        self.revocations_lost = Counter(
            "intentwatch_revocations_unpublished", "Revocations the broker did not take even "
            "after retries (the engine revokes the task again on its next violation).",
            registry=r,
        )
        self.audits = Counter("intentwatch_audits", "Task audits published.", registry=r)
        self.dead_letters = Counter(
            "intentwatch_dead_letters", "Records sent to the dead-letter topic, by reason and "
            "source topic.", ["reason", "topic"], registry=r,
        )
        self.grants_verified = Counter(
            "intentwatch_grants_verified", "Grants whose signature and claims verified.",
            registry=r,
        )
        self.grants_rejected = Counter(
            "intentwatch_grants_rejected", "Grants refused, by rejection code.", ["code"],
            registry=r,
        )
        self.engine_seconds = Histogram(
            "intentwatch_engine_seconds", "Engine time per input event or tick, by event kind.",
            ["event"], buckets=_ENGINE_BUCKETS, registry=r,
        )
        self.event_lag = Histogram(
            "intentwatch_event_lag_seconds", "From an event's own time (a call's or task "
            "event's ts, a grant's issue time) to the worker reading it, by event kind.",
            ["event"], buckets=_LAG_BUCKETS, registry=r,
        )
        self.revocation_latency = Histogram(
            "intentwatch_revocation_latency_seconds", "From the event a revocation is for (the "
            "call, the task's end, the grant's expiry) to its publication, by reason code.",
            ["reason"], buckets=_LAG_BUCKETS, registry=r,
        )
        self.lag_records = Gauge(
            "intentwatch_consumer_lag_records", "Records of an input partition held by this "
            "worker that it has not processed yet.", ["topic", "partition"], registry=r,
        )
        self.lag_seconds = Gauge(
            "intentwatch_consumer_lag_seconds", "How old the last processed record of an input "
            "partition is while newer ones wait (0 when caught up).", ["topic", "partition"],
            registry=r,
        )
        self.table_keys = Gauge(
            "intentwatch_table_keys", "Keys in a state table, in the partitions this worker holds.",
            ["table"], registry=r,
        )
        for decision in get_args(Decision):
            self.verdicts.labels(decision)
        for reason in REASON_CODES:
            self.revocations.labels(reason)
            self.revocation_latency.labels(reason)
        for code in GRANT_REJECTION_CODES:
            self.grants_rejected.labels(code)
        for kind in _EVENT_KINDS.values():
            self.engine_seconds.labels(kind)
            self.event_lag.labels(kind)
        self.engine_seconds.labels("tick")
        r.register(_ShedCollector(shed if shed is not None else {}))

    # -- hooks ----------------------------------------------------------------------------

    def consumed(self, topic: str, partition: int, offset: int, timestamp: float) -> None:
        """An input record (Kafka ``timestamp`` in seconds) is about to be processed."""
        self.records.labels(topic).inc()
        self._next[(topic, partition)] = (offset + 1, timestamp)

    def decoded(self, event: Event) -> None:
        """An input record decoded (a grant: verified) into ``event``."""
        if isinstance(event, Grant):
            self.grants_verified.inc()
        lag = max(0.0, self._wall() - event_time(event))  # a clock ahead of ours: no lag
        self.event_lag.labels(_EVENT_KINDS[type(event)]).observe(lag)

    @contextmanager
    def engine_time(self, event: Event | None) -> Iterator[None]:
        """Time the engine on ``event`` (``None``: a tick). An event the engine refuses
        (it raises) is a dead letter, not engine work: it is not observed here."""
        kind = "tick" if event is None else _EVENT_KINDS[type(event)]
        start = time.perf_counter()
        yield
        self.engine_seconds.labels(kind).observe(time.perf_counter() - start)

    def published(self, outcome: Outcome, lost: Collection[Revocation] = ()) -> None:
        """``outcome`` has been published, except the revocations ``lost``."""
        now = self._wall()
        for verdict in outcome.verdicts:
            self.verdicts.labels(verdict.decision).inc()
        self.revocations_lost.inc(len(lost))
        for revocation in outcome.revocations:
            if revocation in lost:
                continue
            self.revocations.labels(revocation.reason_code).inc()
            self.revocation_latency.labels(revocation.reason_code).observe(
                max(0.0, now - revocation.event_ts)
            )
        self.audits.inc(len(outcome.audits))

    def dead_letter(self, topic: str, error: BaseException) -> None:
        """A record of ``topic`` went to the dead-letter topic because of ``error``."""
        self.dead_letters.labels(reason_of(error), topic).inc()
        if isinstance(error, GrantRejected):
            self.grants_rejected.labels(error.code).inc()

    def assigned(self, partitions: Collection[tuple[str, int]]) -> None:
        """The worker now holds ``partitions`` (topic, partition): forget the others."""
        held = {(topic, partition) for topic, partition in partitions}
        self._next = {tp: seen for tp, seen in self._next.items() if tp in held}

    # -- scrape ---------------------------------------------------------------------------

    async def page(self, accept: str | None) -> tuple[bytes, str]:
        """Sample lag and table sizes, then the metrics in the format ``accept`` asks for
        (Prometheus text or OpenMetrics): the body and its content type."""
        await self._sample_lag()
        for name, table in self._tables.items():
            self.table_keys.labels(name).set(len(table))
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def _sample_lag(self) -> None:
        """Records behind per held input partition: its high watermark less the next offset
        to process (before the first record of an assignment, the consumer's position)."""
        self.lag_records.clear()
        self.lag_seconds.clear()
        consumer = self._consumer() if self._consumer is not None else None
        if consumer is None:
            return
        try:
            assignment = consumer.assignment()
        except Exception:  # not started, or between generations
            return
        now = self._wall()
        for tp in assignment:
            if tp.topic not in self._topics:
                continue
            end: int | None = consumer.highwater(tp)
            seen = self._next.get((tp.topic, tp.partition))
            position = seen[0] if seen else await _position(consumer.position(tp))
            if end is None or position is None:
                continue
            behind = max(0, end - position)
            labels = (tp.topic, str(tp.partition))
            self.lag_records.labels(*labels).set(behind)
            if behind == 0:
                self.lag_seconds.labels(*labels).set(0.0)
            elif seen:
                self.lag_seconds.labels(*labels).set(max(0.0, now - seen[1]))


class _ShedCollector(Collector):
    """``intentwatch_state_shed_total``, read from the engines' counter at scrape time.

    >>> registry = CollectorRegistry()
    >>> registry.register(_ShedCollector({("task", "evicted"): 3}))
    >>> registry.get_sample_value("intentwatch_state_shed_total",
    ...                           {"kind": "task", "action": "evicted"})
    3.0
    """

    def __init__(self, shed: Mapping[tuple[ShedKind, str], int]) -> None:
        self._shed = shed

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "intentwatch_state_shed", "Per-agent state refused or evicted past its limits, by "
            "kind (grant, task, staged_call, parked_call, usage, tombstone) and action "
            "(evicted, refused).", labels=["kind", "action"],
        )
        for kind, action in SHED:
            family.add_metric([kind, action], float(self._shed.get((kind, action), 0)))
        yield family


async def _position(position: Awaitable[int | None]) -> int | None:
    """The consumer's position, or ``None`` while the partition moves."""
    try:
        return await position
    except Exception:
        return None
