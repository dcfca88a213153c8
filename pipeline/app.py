"""One worker's faust app: decode → engine → publish, for the partitions it owns.

One agent (``concurrency=1``) reads the input topic, where each agent's grants, tool
calls and task events are one log, so they are judged in the order they were
published. Each owned partition has its own :class:`~intentwatch.models.engine.Engine` and
stream clock (:class:`~intentwatch.models.clock.LogClock`): time-driven work (grace periods,
grant expiry, quiet tasks) is done as that partition's log moves on, by its data
records and by the tick records a timer writes into it, so reading the same log
again decides the same. What the engines know lives in faust tables (changelog topics,
co-partitioned with the input): grants, open tasks, ended tasks' tombstones (and the
latest grant of each agent's tasks forgotten early), each partition's stream time, and
what each partition's own detector learned (each agent's state keyed by the agent,
written when a task's learning changed it; every ``population_seconds`` of stream time,
the partition's fleet and shared-model state and each of its roles that learned since, a
record per role; as versioned data in records of a bounded size:
:mod:`~intentwatch.models.learned`).
So state moves with its partition when workers join or leave and is rebuilt after a
crash, and a partition's verdicts depend on its log only, not on which worker reads it.
A second agent (:mod:`~intentwatch.pipeline.spans`) turns the OpenTelemetry Collector's
span records into tool calls on the input topic.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, cast

import faust
import msgspec
from aiokafka.partitioner import murmur2
from faust.serializers import codecs
from faust.streams import current_event
from faust.types import TP, AgentT, EventT

from intentwatch.contracts import KIND_HEADER, TOPICS, ContractError, Grant, RecordRejected
from intentwatch.models.admission import check_tick, check_time
from intentwatch.models.clock import LogClock
from intentwatch.models.config import ScoringConfig, load_config
from intentwatch.models.detection import Detector, history_summary
from intentwatch.models.engine import Engine, Outcome, TaskState, Tombstone
from intentwatch.models.learned import LearnedStateError, PartedStore
from intentwatch.models.limits import ShedKind
from intentwatch.models.replay import event_time
from intentwatch.pipeline.buffered import BufferedTable
from intentwatch.pipeline.decoding import Decoder, claimed_task, kind_of
from intentwatch.pipeline.dlq import DeadLetterLog
from intentwatch.pipeline.kafka_health import KafkaHealth, OutageFilter
from intentwatch.pipeline.metrics import Metrics
from intentwatch.pipeline.publishing import Headers, Publisher, Send
from intentwatch.pipeline.settings import Settings, SettingsError
from intentwatch.pipeline.spans import SpanInput
from intentwatch.pipeline.topics import TopicSpec, layout
from intentwatch.pipeline.web import add_views
from intentwatch.tokens.grants import GrantRejected, GrantVerifier
from intentwatch.tokens.keys import Keyring

__all__ = [
    "INPUT_TOPICS", "TABLES", "Pipeline", "TypedTable", "agent_partition", "table_store_options",
    "worker_topics",
]

log = logging.getLogger(__name__)

_TICK = b"tick"
_TICK_HEADERS = ((KIND_HEADER, _TICK),)

INPUT_TOPICS = (TOPICS["events"],)
"""The topic the worker consumes: every agent's grants, calls and task events, keyed by
agent SPIFFE ID."""

TABLES = ("grants", "open", "ended", "forgotten", "partitions", "learned")
"""The names of the worker's tables; each has a compacted changelog topic, co-partitioned
with the input topics."""


class PartitionState(msgspec.Struct, frozen=True):
    """What a partition's engine keeps besides its agents' tables: its stream time."""

    clock: tuple[float, float, float, float]
    """:meth:`LogClock.state`."""
    last_sweep: float
    """:attr:`Engine.last_sweep`."""
    population_at: float = -math.inf
    """Stream time the partition's population (and changed roles) were last written."""
    population_calls: int = 0
    """Calls its detector had learned then."""


class _TypedCodec(codecs.Codec):
    """Table values of one type as msgpack (msgspec; typed, strict on the way in)."""

    def __init__(self, value_type: Any) -> None:
        super().__init__()
        self._decoder = msgspec.msgpack.Decoder(value_type)

    def _dumps(self, value: Any) -> bytes:
        return msgspec.msgpack.encode(value)

    def _loads(self, data: bytes) -> Any:
        return self._decoder.decode(data)


_CODECS = {
    "intentwatch-grants": dict[str, Grant],
    "intentwatch-open": TaskState,
    "intentwatch-ended": Tombstone,
    "intentwatch-forgotten": float,
    "intentwatch-partitions": PartitionState,
}
for _name, _type in _CODECS.items():
    codecs.register(_name, _TypedCodec(_type))


def worker_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Every topic a worker with ``settings`` needs (see
    :func:`~intentwatch.pipeline.topics.layout`)."""
    changelogs = [f"{settings.app_id}-{table}-changelog" for table in TABLES]  # faust's names
    topics = layout(settings, inputs=INPUT_TOPICS, changelogs=changelogs)
    # The Collector's span topic: read, re-keyed by agent, so not co-partitioned.
    topics[settings.otlp_topic] = TopicSpec(
        settings.otlp_topic, settings.partitions, settings.replication_factor)
    return topics


@lru_cache(maxsize=65536)
def agent_partition(agent_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives records keyed by ``agent_id``."""
    return (murmur2(agent_id.encode()) & 0x7FFFFFFF) % partitions


_MIB = 2**20


def table_store_options(name: str) -> dict[str, int]:
    """How much memory RocksDB may use for one table's database (one per table and
    partition): faust's defaults give each a 2 GiB block cache and up to 3 × 64 MiB of
    write buffers, more than a worker with dozens of them can hold. The ``learned`` table,
    read whenever an agent that is not resident is met, gets the larger cache; the others
    are read back only on recovery.

    >>> table_store_options("learned")["block_cache_size"] // 2**20
    64
    """
    return {"block_cache_size": (64 if name == "learned" else 8) * _MIB,
            "write_buffer_size": 8 * _MIB, "max_write_buffer_number": 2}


class TypedTable(faust.Table):
    """Agent id (or partition) → a typed value (its codec one of :data:`_CODECS`, or
    ``raw``: bytes the engine decodes, e.g. learned state of another version is refused
    there, not when the table is recovered)."""

    def __init__(self, app: faust.App, *, codec: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.value_serializer = codec


class Pipeline:
    """The faust app of one worker and the engine it drives.

    ``send`` replaces publishing to Kafka (tests); ``store`` is the table store URL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        keyring: Keyring,
        grant_verifier: GrantVerifier,
        config: ScoringConfig | None = None,
        send: Send | None = None,
        store: str = "memory://",
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{server.strip()}" for server in settings.bootstrap.split(",")],
            store=store,
            autodiscover=False,
            datadir=str(settings.data_dir),
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            topic_disable_leader=True,
            table_standby_replicas=settings.standby_replicas,
            broker_session_timeout=settings.session_timeout_seconds,
            broker_heartbeat_interval=settings.session_timeout_seconds / 6,
            consumer_auto_offset_reset="earliest",
            producer_linger=settings.producer_linger_ms / 1000,
            stream_wait_empty=False,  # records not yet flushed are read again after a stop
            web_port=settings.web_port,
            web_bind=settings.web_bind,
            web_host=settings.web_host,
        )
        self.topics = {
            name: self.app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw", partitions=settings.partitions,
            )
            for name in TOPICS.values()
        }
        self.grants = self._table("grants", "Active grants: agent id -> {task id: Grant}.")
        self.open = self._table("open", "Open tasks: 'agent id|task id' -> TaskState.")
        self.ended = self._table(
            "ended", "Ended tasks, for a day: 'agent id|task id' -> Tombstone."
        )
        self.forgotten = self._table(
            "forgotten", "Agent id -> the latest issue time of the grants of its tasks "
            "forgotten early."
        )
        self.partitions = self._table(
            "partitions", "Stream time of each partition: 'partition-N' -> PartitionState."
        )
        self.learned = self._table(
            "learned", "What was learned: agent id -> Detector.agent_state; "
            "'partition-N/population' -> that partition's Detector.population_state; "
            "'partition-N/role/<role>' -> its Detector.role_state (values past "
            "models.learned.PART_BYTES in parts: 'key#partN').",
            codec="raw",
        )
        self.learned_records = PartedStore(self.learned)
        """The ``learned`` table's values, whole (their parts joined)."""
        self.config = config or load_config()
        self.engines: dict[int, Engine] = {}
        """Partition -> its engine and its own detector (made when the partition is first
        read, from the tables)."""
        self.clocks: dict[int, LogClock] = {}
        """Partition -> its stream time."""
        self._kept: dict[int, PartitionState] = {}
        """Partition -> what of it was last written to ``partitions``."""
        self._buffers: dict[int, dict[str, BufferedTable[Any]]] = {}
        """Partition -> its engine's view of each table: written to the table (and its
        changelog) once per key every ``flush_records`` records and at each tick."""
        self._unflushed: Counter[int] = Counter()
        """Partition -> records read since its last flush."""
        self._held: dict[int, list[EventT]] = {}
        """Partition -> the input records read since its last flush, acknowledged (their
        offsets committable) once what they changed is flushed."""
        self._detectors: dict[int, Detector] = {}
        """Partition -> its detector, kept while the partition is owned (its population
        state may be newer than the table's)."""
        self.warm = (warm_start(self.config, settings.warm_from)
                     if settings.warm_from is not None else None)
        """What the worker starts from (``INTENTWATCH_WARM_FROM``) where the tables hold
        no learned state of a partition yet."""
        self.decoder = Decoder(grant_verifier)
        self.publisher = Publisher(
            send or self._send, keyring.active, issuer=settings.issuer, audience=settings.audience
        )
        self.received: Counter[str] = Counter()
        self._errors = DeadLetterLog()
        """Tracebacks of unexpected errors, one per error class a minute."""
        self.shed: Counter[tuple[ShedKind, str]] = Counter()
        """State refused or evicted past the limits, by all the partitions' engines."""
        self.metrics = Metrics(consumer=lambda: self.app.consumer, topics=INPUT_TOPICS,
                               tables=self.app.tables, shed=self.shed)
        self.ready = False
        self.kafka = KafkaHealth(settings.bootstrap)
        self._owned: frozenset[int] = frozenset()
        self.agent = self._agent()
        self.spans = SpanInput(
            self.app, settings.otlp_topic, settings.otlp_encoding, send=send or self._send,
            dead_letter=self.publisher.dead_letter, received=self.received,
            partitions=settings.partitions,
        )
        self.app.timer(settings.tick_seconds, name="intentwatch.tick")(self.tick)
        self.app.timer(1.0, name="intentwatch.kafka-probe")(self.kafka.probe)
        self.app.task(self._on_start)
        self.app.on_partitions_assigned.connect(
            self._on_partitions_assigned  # type: ignore[arg-type]  # faust passes `assigned`
        )
        self.grants.on_recover(self._on_recovered)
        add_views(self.app, jwks=keyring.jwks, status=self.status, metrics=self.metrics.page,
                  health=self.health)

    def count_flushed(self, partition: int, headers: dict[str, bytes]) -> bool:
        """Count one record of ``partition`` as processed; flush the partition's table
        writes if ``flush_records`` records were read since the last flush or the record
        is a tick. Returns whether everything read from it is now written."""
        self._unflushed[partition] += 1
        if (self._unflushed[partition] >= self.settings.flush_records
                or headers.get(KIND_HEADER) == _TICK):
            for table in self._tables(partition).values():
                table.flush()
            self._unflushed[partition] = 0
        return self.flushed(partition)

    def flushed(self, partition: int) -> bool:
        """Whether everything read from ``partition`` is written to the tables."""
        return not self._unflushed[partition]

    async def judge(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: float,
        headers: dict[str, bytes],
    ) -> Outcome | None:
        """Process one input record; a record that cannot be used becomes a dead letter.

        Stream time is the partition's: a tick record moves it to the tick's timestamp,
        a data record to its event time. Grants are verified at that clock
        (:func:`grant_time`), never at the record's timestamp: the producer sets that, so
        a back-dated record would pass an expired grant and a forward-dated one a grant
        not yet valid. A record (a tick too) stamped past the wall clock by more than the
        allowance is rejected here, where records enter, before it can move the clock
        (the engine never reads the wall clock, so a replay decides the same).
        """
        topic = TOPICS["events"]
        engine, clock = self._partition(partition)
        self.metrics.consumed(topic, partition, offset, timestamp)
        try:
            if value is None:
                raise RecordRejected("malformed", "record has no value")
            kind = kind_of(headers, value)
            self.received[kind] += 1
            if kind == "tick":
                check_tick(timestamp, time.time(), self.config.max_ahead_seconds)
                with self.metrics.engine_time(None):
                    outcome = engine.tick(clock.tick(timestamp))
                self._keep_time(partition, engine, clock)
                await self._publish(engine, outcome)
                return outcome
            event = self.decoder.decode(kind, key, value, partial(grant_time, clock))
            check_time(event, time.time(), self.config.max_ahead_seconds)
        except ContractError as error:
            if isinstance(error, GrantRejected) and (claimed := claimed_task(value)):
                engine.grant_rejected(*claimed, str(error))  # calls name why
            await self.publisher.dead_letter(topic, partition, offset, key, value, error)
            self.metrics.dead_letter(topic, error)
            return None
        now = clock.observe(event_time(event))
        outcome = engine.tick(now)
        try:
            with self.metrics.engine_time(event):
                outcome.extend(engine.process(event, now=now))
        except Exception as error:
            if not isinstance(error, ContractError) and self._errors.line(
                type(error).__name__, str(error)
            ):
                log.exception("failed on %s/%d@%d", topic, partition, offset)
            await self.publisher.dead_letter(topic, partition, offset, key, value, error)
            self.metrics.dead_letter(topic, error)
        else:  # an event the engine refused is a dead letter, not a judged event
            self.metrics.decoded(event)
        self._keep_time(partition, engine, clock)
        await self._publish(engine, outcome)
        return outcome

    async def tick(self) -> None:
        """Write a tick record into each owned partition: stream time moves on there
        while its agents are quiet (their grants expire, their tasks go quiet)."""
        if not self.ready or self.app.rebalancing:
            return
        for partition in sorted(self._owned):
            await self.topics[TOPICS["events"]].send(
                key=None, value=b"", partition=partition, headers=list(_TICK_HEADERS)
            )

    async def _publish(self, engine: Engine, outcome: Outcome) -> None:
        lost = await self.publisher.publish(outcome)
        for revocation in lost:
            engine.revocation_lost(revocation)
        self.metrics.published(outcome, lost)


    def owns(self, agent_id: str) -> bool:
        """Whether this worker holds the partition of ``agent_id``."""
        return agent_partition(agent_id, self.settings.partitions) in self._owned

    def status(self) -> dict[str, Any]:
        """Counters for ``/status``."""
        return {
            "app_id": self.settings.app_id,
            "ready": self.ready and self.kafka.reachable,
            "kafka": self.kafka.status(),
            "partitions": sorted(self._owned),
            "signing_kid": self.keyring.active.kid,
            "received": dict(self.received),
            "published": dict(self.publisher.counts),
            "learned": self._learned_status(),
            "spans": self.spans.status(),
        }

    def _learned_status(self) -> dict[str, Any]:
        detectors = [engine.detector for engine in self.engines.values()]
        return {
            "learned_calls": sum(d.learned_calls for d in detectors),
            "restored_calls": sum(d.restored_calls for d in detectors),
            "restored_agents": sum(sum(e.met.values()) for e in self.engines.values()),
            "kept_calls": sum(kept.population_calls for kept in self._kept.values()),
            "warm_from": str(self.settings.warm_from) if self.warm is not None else None,
            "history": history_summary(detectors),
        }

    def health(self) -> dict[str, Any]:
        """For ``/health`` and ``/ready``: whether the worker judges, and Kafka's state."""
        kafka = self.kafka.status()
        return {"status": "ok" if kafka["reachable"] else "kafka unreachable",
                "ready": self.ready and kafka["reachable"], "kafka": kafka}

    def _agent(self) -> AgentT:
        async def consume(stream: faust.StreamT) -> AsyncIterator[Outcome | None]:
            manual = cast(faust.Stream, stream).noack()  # acknowledged once flushed
            async for event in manual.events():
                message = event.message
                headers = dict(message.headers or ())
                outcome = await self.judge(message.partition, message.offset, event.key,
                                           event.value, message.timestamp, headers)
                held = self._held.setdefault(message.partition, [])
                held.append(event)
                if self.count_flushed(message.partition, headers):  # state in changelogs
                    for read in held:
                        read.ack()
                    held.clear()
                yield outcome

        return self.app.agent(self.topics[TOPICS["events"]], name="events", concurrency=1)(
            consume
        )

    def _table(self, name: str, help: str, codec: str | None = None) -> TypedTable:
        table = TypedTable(self.app, codec=codec or f"intentwatch-{name}", name=name,
                          partitions=self.settings.partitions, beacon=self.app.tables.beacon,
                          help=help, options=table_store_options(name))
        self.app.tables.add(table)
        return table

    def _partition(self, partition: int) -> tuple[Engine, LogClock]:
        engine = self.engines.get(partition)
        if engine is None:
            tables = self._tables(partition)
            engine = self.engines[partition] = Engine(
                self.config, grants=tables["grants"], open=tables["open"],
                ended=tables["ended"], forgotten=tables["forgotten"],
                learned=PartedStore(tables["learned"]), detector=self._detector(partition),
                shed=self.shed,
            )
            engine.restore(lambda agent: agent_partition(agent, self.settings.partitions)
                           == partition)
            kept = tables["partitions"].get(f"partition-{partition}")
            if kept is None:
                self.clocks[partition] = LogClock()
                kept = PartitionState(self.clocks[partition].state(), engine.last_sweep)
            else:
                self.clocks[partition] = LogClock.from_state(kept.clock)
                engine.last_sweep = kept.last_sweep
            self._kept[partition] = kept
        return engine, self.clocks[partition]

    def _tables(self, partition: int) -> dict[str, BufferedTable[Any]]:
        """The partition's view of each table (see ``_buffers``)."""
        tables = self._buffers.get(partition)
        if tables is None:
            tables = self._buffers[partition] = {
                name: BufferedTable(getattr(self, name)) for name in TABLES
            }
        return tables

    def _detector(self, partition: int) -> Detector:
        """The partition's detector, with the population and role state last written for
        it (its agents' own state is read as the engine meets them); where the tables hold
        none yet, what the worker was warmed from (its agents of this partition are
        written to the table)."""
        if partition in self._detectors:
            return self._detectors[partition]
        detector = self._detectors[partition] = Detector(self.config)
        records = self.learned_records
        try:
            kept = records.get(_population_key(partition))
            if kept is not None:
                for role in detector.load_population_state(kept):
                    state = records.get(_role_key(partition, role))
                    if state is not None:
                        detector.load_role_state(state)
                return detector
        except LearnedStateError as error:  # another version or config: start afresh
            log.warning("partition %d: not taking its learned population state (%s)",
                        partition, error)
            detector = self._detectors[partition] = Detector(self.config)
        if self.warm is not None:
            warm = self.warm
            for role in detector.load_population_state(warm.population_state()):
                detector.load_role_state(warm.role_state(role))
            for agent in sorted(warm.learned_agents()):
                if (agent_partition(agent, self.settings.partitions) == partition
                        and agent not in records):
                    records[agent] = warm.agent_state(agent)
            self._write_population(partition, detector, detector.learned_roles())
        return detector

    def _keep_time(self, partition: int, engine: Engine, clock: LogClock) -> None:
        """Write the partition's stream time; every ``population_seconds`` of it, when
        something was learned since, its detector's population and changed roles."""
        kept = self._kept[partition]
        detector = engine.detector
        calls = detector.restored_calls + detector.learned_calls
        if (calls != kept.population_calls
                and clock.now - kept.population_at >= self.settings.population_seconds):
            self._write_population(partition, detector, detector.take_learned_roles())
            kept = msgspec.structs.replace(kept, population_at=clock.now,
                                           population_calls=calls)
        kept = msgspec.structs.replace(kept, clock=clock.state(), last_sweep=engine.last_sweep)
        self._kept[partition] = kept
        self._tables(partition)["partitions"][f"partition-{partition}"] = kept

    def _write_population(self, partition: int, detector: Detector, roles: set[str]) -> None:
        """Write ``roles``' state, then the population naming every role."""
        for role in sorted(roles):
            self.learned_records[_role_key(partition, role)] = detector.role_state(role)
        self.learned_records[_population_key(partition)] = detector.population_state()

    async def _send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        """Hand the record to the producer; the result resolves once the broker has it.

        What an input record produced goes to that record's partition: all topics are
        keyed by agent and co-partitioned, and a dead letter's key may be anything. What a
        span record produced (tool calls re-keyed by agent) goes where its key says.
        """
        event = current_event()
        partition = (event.message.partition
                     if event is not None and event.message.topic == TOPICS["events"] else None)
        return await self.topics[topic].send(
            key=key, value=value, partition=partition, headers=list(headers)
        )

    async def _on_start(self) -> None:
        OutageFilter(self.kafka).install()  # once logging is set up: one line per outage
        settings = self.settings
        log.info("worker %s on %s: web %s:%d, signing key %s", settings.app_id,
                 settings.bootstrap, settings.web_bind, settings.web_port, self.keyring.active.kid)

    async def _on_partitions_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        self._owned = frozenset(tp.partition for tp in assigned if tp.topic == TOPICS["events"])
        self.metrics.assigned(assigned)
        for partition in set(self.engines) - self._owned:  # rebuilt from the tables if back
            del self.engines[partition], self.clocks[partition], self._kept[partition]
        for partition in set(self._detectors) - self._owned:  # its table may change elsewhere
            del self._detectors[partition]
        self._forget_unflushed()
        log.info("assigned partitions %s", sorted(self._owned))

    def _forget_unflushed(self) -> None:
        """After a rebalance each partition is read again from its committed offset,
        which is where its last flush left the tables: what was read since is dropped
        (a detector that learned from it too), and read again."""
        for partition, tables in self._buffers.items():
            if not self.flushed(partition):
                self._detectors.pop(partition, None)
            for table in tables.values():
                table.discard()
        self._buffers.clear()
        self._held.clear()
        self._unflushed.clear()

    async def _on_recovered(self) -> None:
        self._forget_unflushed()
        self.engines.clear()  # each is rebuilt from the recovered tables when first read
        self.clocks.clear()
        self._kept.clear()
        self.ready = True
        log.info("grants recovered for partitions %s", sorted(self._owned))


def _population_key(partition: int) -> str:
    return f"partition-{partition}/population"


def _role_key(partition: int, role: str) -> str:
    return f"partition-{partition}/role/{role}"


def warm_start(config: ScoringConfig, path: Path) -> Detector:
    """A detector that learned what the file at ``path`` says (``intentwatch learn``);
    :class:`SettingsError` naming the variable for a missing or unusable file."""
    detector = Detector(config)
    try:
        detector.load_state(path.read_bytes())
    except FileNotFoundError:
        raise SettingsError(f"INTENTWATCH_WARM_FROM {path}: no such file "
                            "(`intentwatch learn EVENTS.jsonl` makes one)") from None
    except LearnedStateError as error:
        raise SettingsError(f"INTENTWATCH_WARM_FROM {path}: {error}") from None
    log.info("warm start: what %d learned calls taught, from %s", detector.restored_calls, path)
    return detector


def grant_time(clock: LogClock, grant: Grant) -> float:
    """The time ``grant`` is judged valid at; never the record's timestamp.

    Its partition's stream time once the grant is read (its issue time if later, at most
    the wall clock plus the clock's skew), but never before the partition's newest tick:
    the grant was published after that tick, so a grant expired by then was expired when
    it was published. Stream time alone may lag the wall clock by as much as the history
    read last is old (a backlog, another test's fleet), and a grant judged at its own
    issue time is always valid. Before the partition has a stream time or a tick, the
    wall clock.
    """
    wall = time.time()
    now = clock.now if clock.now > -math.inf else wall
    published_after = clock.wall if clock.wall < math.inf else wall
    return max(now, min(grant.issued_at, wall + clock.max_skew), published_after)
