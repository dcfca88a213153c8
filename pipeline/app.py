"""One worker's faust app: decode → engine → publish, for the partitions it owns.

Three agents (grants, tool calls, task events; ``concurrency=1``) feed one shared
:class:`~intentwatch.models.engine.Engine`; a timer runs ``engine.tick`` for grace periods and
grant expiry. Active grants live in a faust table (the engine's ``grants``
mapping), so they move with their partitions when workers join or leave.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from functools import lru_cache
from typing import Any

import faust
import msgspec
from aiokafka.partitioner import murmur2
from faust.serializers import codecs
from faust.streams import current_event
from faust.types import TP, AgentT

from intentwatch.contracts import TOPICS, ContractError, Grant, ToolCall
from intentwatch.models.clock import StreamClock
from intentwatch.models.config import ScoringConfig, load_config
from intentwatch.models.engine import Engine, Outcome
from intentwatch.models.replay import event_time
from intentwatch.pipeline.decoding import Decoder, claimed_task
from intentwatch.pipeline.dlq import DeadLetterLog
from intentwatch.pipeline.publishing import Headers, Publisher, Send
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.snapshots import Snapshots
from intentwatch.pipeline.topics import TopicSpec, layout
from intentwatch.pipeline.web import add_views
from intentwatch.tokens.grants import GrantRejected, GrantVerifier
from intentwatch.tokens.keys import Keyring

__all__ = ["INPUT_TOPICS", "TABLES", "GrantsTable", "Pipeline", "agent_partition", "worker_topics"]

log = logging.getLogger(__name__)

INPUT_TOPICS = (TOPICS["grants"], TOPICS["toolcalls"], TOPICS["tasks"])
"""The topics the worker consumes, all keyed by agent SPIFFE ID and co-partitioned."""

TABLES = ("grants",)
"""The names of the worker's tables; each has a compacted changelog topic, co-partitioned
with the input topics."""

_GRANTS_CODEC = "intentwatch-grants"


class _GrantsCodec(codecs.Codec):
    """A grants table value, ``{task id: Grant}``, as JSON (msgspec, strict on the way in)."""

    _decoder = msgspec.json.Decoder(dict[str, Grant])

    def _dumps(self, value: dict[str, Grant]) -> bytes:
        return msgspec.json.encode(value)

    def _loads(self, data: bytes) -> dict[str, Grant]:
        return self._decoder.decode(data)


codecs.register(_GRANTS_CODEC, _GrantsCodec())


def worker_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Every topic a worker with ``settings`` needs (see
    :func:`~intentwatch.pipeline.topics.layout`)."""
    changelogs = [f"{settings.app_id}-{table}-changelog" for table in TABLES]  # faust's names
    return layout(settings, inputs=INPUT_TOPICS, changelogs=changelogs)


@lru_cache(maxsize=65536)
def agent_partition(agent_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives records keyed by ``agent_id``."""
    return (murmur2(agent_id.encode()) & 0x7FFFFFFF) % partitions


class GrantsTable(faust.Table):
    """Agent id → ``{task id: Grant}``, also writable from the timer.

    In a stream a write goes to the changelog partition of the event being
    processed (faust's rule); outside one (the engine's tick forgetting old
    grants) to the partition the agent id hashes to, which is the same one.
    """

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.value_serializer = _GRANTS_CODEC

    def partition_for_key(self, key: str) -> int | None:
        if current_event() is not None:
            return super().partition_for_key(key)
        return agent_partition(key, self.partitions)


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
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
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
        self.grants = GrantsTable(
            self.app, name="grants", partitions=settings.partitions,
            beacon=self.app.tables.beacon, help="Active grants: agent id -> {task id: Grant}.",
        )
        self.app.tables.add(self.grants)
        self.engine = Engine(config or load_config(), grants=self.grants)
        self.snapshots = Snapshots(self.engine.detector, settings.data_dir)
        self.snapshots.restore()
        self.clock = StreamClock()
        self.grants_clock = StreamClock()
        """How far the grants topic has been read: calls wait for it, not for the others."""
        self.calls_clocks: dict[int, StreamClock] = {}
        """How far each partition of the tool-call topic has been read: a finished task is
        forgotten only once its partition's calls have moved past it."""
        self.decoder = Decoder(grant_verifier)
        self.publisher = Publisher(
            send or self._send, keyring.active, issuer=settings.issuer, audience=settings.audience
        )
        self.received: Counter[str] = Counter()
        self._errors = DeadLetterLog()
        """Tracebacks of unexpected errors, one per error class a minute."""
        self.ready = False
        self._owned: frozenset[int] = frozenset()
        self.agents = {topic: self._agent(topic) for topic in INPUT_TOPICS}
        self.app.timer(settings.tick_seconds, name="intentwatch.tick")(self.tick)
        self.app.timer(settings.snapshot_seconds, name="intentwatch.snapshot")(
            self.snapshots.save
        )
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        self.app.task(self._on_start)
        self.app.on_partitions_assigned.connect(
            self._on_partitions_assigned  # type: ignore[arg-type]  # faust passes `assigned`
        )
        self.grants.on_recover(self._on_recovered)
        add_views(self.app, jwks=keyring.jwks, status=self.status)

    async def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: float,
    ) -> Outcome | None:
        """Process one input record; a record that cannot be used becomes a dead letter.

        Grants are verified at the record's timestamp, when they were published: the
        input topics are consumed independently, so stream time may already be past a
        grant that was valid when it was issued. An expired grant still authorises
        nothing: calls after its expiry violate it.
        """
        self.received[topic] += 1
        try:
            event = self.decoder.decode(topic, key, value, timestamp)
            when = event_time(event)
            if isinstance(event, Grant):
                self.grants_clock.observe(when)
            elif isinstance(event, ToolCall):
                self.calls_clocks.setdefault(partition, StreamClock()).observe(when)
            outcome = self.engine.process(
                event, now=self.clock.observe(when), grants_now=self.grants_clock.now()
            )
        except Exception as error:
            if not isinstance(error, ContractError) and self._errors.line(
                type(error).__name__, str(error)
            ):
                log.exception("failed on %s/%d@%d", topic, partition, offset)
            if isinstance(error, GrantRejected) and (claimed := claimed_task(value)):
                self.engine.grant_rejected(*claimed, str(error))  # calls name why
            await self.publisher.dead_letter(topic, partition, offset, key, value, error)
            return None
        await self._publish(outcome)
        return outcome

    async def tick(self) -> None:
        """Time-driven work of the owned partitions: grace periods, grant expiry."""
        if not self.ready or self.app.rebalancing:
            return
        try:
            outcome = self.engine.tick(
                self.clock.now(), grants_now=self.grants_clock.now(), calls_now=self.calls_read
            )
        except Exception:
            log.exception("engine tick failed")
            return
        if outcome:
            await self._publish(outcome)

    async def _publish(self, outcome: Outcome) -> None:
        for revocation in await self.publisher.publish(outcome):
            self.engine.revocation_lost(revocation)

    def calls_read(self, agent_id: str) -> float:
        """How far the tool calls of ``agent_id``'s partition have been read (``-inf``
        before any)."""
        clock = self.calls_clocks.get(agent_partition(agent_id, self.settings.partitions))
        return clock.now() if clock is not None else -math.inf

    def owns(self, agent_id: str) -> bool:
        """Whether this worker holds the partition of ``agent_id``."""
        return agent_partition(agent_id, self.settings.partitions) in self._owned

    def status(self) -> dict[str, Any]:
        """Counters for ``/status``."""
        return {
            "app_id": self.settings.app_id,
            "ready": self.ready,
            "partitions": sorted(self._owned),
            "signing_kid": self.keyring.active.kid,
            "received": dict(self.received),
            "published": dict(self.publisher.counts),
            "learned": self.snapshots.status(),
        }

    def _agent(self, topic: str) -> AgentT:
        async def consume(stream: faust.StreamT) -> AsyncIterator[Outcome | None]:
            async for event in stream.events():
                message = event.message
                yield await self.handle(
                    message.topic, message.partition, message.offset, event.key, event.value,
                    message.timestamp,
                )

        return self.app.agent(self.topics[topic], name=topic, concurrency=1)(consume)

    async def _send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        """Hand the record to the producer; the result resolves once the broker has it."""
        return await self.topics[topic].send(key=key, value=value, headers=list(headers))

    async def _on_start(self) -> None:
        settings = self.settings
        log.info("worker %s on %s: web %s:%d, signing key %s", settings.app_id,
                 settings.bootstrap, settings.web_bind, settings.web_port, self.keyring.active.kid)

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        """The consumer has stopped: keep what was learned up to the last event."""
        await self.snapshots.save()

    async def _on_partitions_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        self._owned = frozenset(tp.partition for tp in assigned if tp.topic == TOPICS["toolcalls"])
        self.engine.forget_agents(self.owns)
        log.info("assigned partitions %s", sorted(self._owned))

    async def _on_recovered(self) -> None:
        self.engine.restore()
        self.engine.forget_agents(self.owns)
        self.ready = True
        log.info("grants recovered for partitions %s", sorted(self._owned))
