"""Streams kept in Kafka: one compacted topic, the stream id as key, its JSON as value.

The transmitter reads the whole topic when it starts (the last record of each
key wins; an empty value deletes) and writes a stream whenever it changes:
created, reconfigured, its status set, its cursor moved. So a restarted (or
moved) transmitter knows every stream and where each one's delivery stands.
The topic holds the receivers' push ``authorization_header`` values: restrict
who may read it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from intentwatch.pipeline.topics import COMPACT, TopicSpec, create_topics
from intentwatch.ssf.streams import Stream, decode_stream, encode_stream

__all__ = ["StreamStore"]

log = logging.getLogger(__name__)


class StreamStore:
    """Load and save :class:`~intentwatch.ssf.streams.Stream` records in ``topic``."""

    def __init__(self, bootstrap: str, topic: str, *, replication_factor: int = 1) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replication_factor = replication_factor
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> dict[str, Stream]:
        """Create the topic if needed and return every stored stream by id."""
        spec = TopicSpec(self.topic, 1, self.replication_factor, configs=COMPACT)
        await asyncio.to_thread(create_topics, self.bootstrap, [spec])
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()
        return await self._load()

    async def put(self, stream: Stream) -> None:
        """Save ``stream`` (waits until the broker has it)."""
        assert self._producer is not None, "start() first"
        await self._producer.send_and_wait(
            self.topic, encode_stream(stream), key=stream.stream_id.encode()
        )

    async def delete(self, stream_id: str) -> None:
        """Forget a stream (a tombstone)."""
        assert self._producer is not None, "start() first"
        await self._producer.send_and_wait(self.topic, None, key=stream_id.encode())

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def _load(self) -> dict[str, Stream]:
        partition = TopicPartition(self.topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        streams: dict[str, Stream] = {}
        try:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            while await consumer.position(partition) < end:
                batches = await consumer.getmany(partition, timeout_ms=1000)
                for record in batches.get(partition, ()):
                    stream_id = record.key.decode()
                    if record.value:
                        streams[stream_id] = decode_stream(record.value)
                    else:
                        streams.pop(stream_id, None)
        finally:
            await consumer.stop()
        log.info("loaded %d stream(s) from %s", len(streams), self.topic)
        return streams
