"""The OpenTelemetry span input: Collector records in, tool calls out, keyed by agent.

A faust agent (``concurrency=1``) reads the topic the Collector's Kafka exporter writes
(``otlp_spans`` unless configured otherwise), decodes each record's ``TracesData``,
maps its ``execute_tool`` spans (:mod:`intentwatch.pipeline.otlp`) and publishes the
tool calls on the input topic (kind ``toolcall``), keyed by their agent's SPIFFE ID.
The Collector's records may be unkeyed or keyed by trace id; from here on every record
of an agent is on that agent's partition, in its one log with its grants and task
events, and is judged like any other call. A record that cannot be read, and each span
that cannot be judged, becomes a dead letter (a span's dead letter holds that span
alone, in the record's encoding).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust

from intentwatch.contracts import KIND_HEADER, TOPICS, ContractError, encode
from intentwatch.pipeline.otlp import RejectedSpan, decode_traces, encode_traces, tool_calls
from intentwatch.pipeline.publishing import Send

__all__ = ["DeadLetter", "SpanInput"]

log = logging.getLogger(__name__)

_TOOLCALL = ((KIND_HEADER, b"toolcall"),)

DeadLetter = Callable[[str, int, int, bytes | None, bytes | None, BaseException], Awaitable[None]]
"""``dead_letter(topic, partition, offset, key, value, error)``."""


class SpanInput:
    """The faust agent of the span topic, publishing with ``send`` and ``dead_letter``."""

    def __init__(
        self,
        app: faust.App,
        topic: str,
        encoding: str,
        *,
        send: Send,
        dead_letter: DeadLetter,
        received: Counter[str],
        partitions: int,
    ) -> None:
        self.topic = topic
        self.encoding = encoding
        self.tool_calls = 0
        """How many tool calls have been read from spans and published."""
        self._send = send
        self._dead_letter = dead_letter
        self._received = received
        channel = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw", partitions=partitions)
        self.agent = app.agent(channel, name=topic, concurrency=1)(self._consume)

    async def handle(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Publish the tool calls of one record, in the order they were made, and return
        once the broker has them all (so the record's offset is committed after that)."""
        self._received[self.topic] += 1
        try:
            found = tool_calls(decode_traces(value or b"", self.encoding))
        except Exception as error:
            if not isinstance(error, ContractError):
                log.exception("failed on %s/%d@%d", self.topic, partition, offset)
            await self._dead_letter(self.topic, partition, offset, key, value, error)
            return
        deliveries = []
        for item in found:
            if isinstance(item, RejectedSpan):
                await self._dead_letter(self.topic, partition, offset, key,
                                        encode_traces(item.traces, self.encoding), item.error)
            else:
                deliveries.append(await self._send(
                    TOPICS["events"], item.agent_id.encode(), encode(item), _TOOLCALL))
        for delivery in deliveries:  # the record is handled once the broker has every call
            if inspect.isawaitable(delivery):
                await delivery
        self.tool_calls += len(deliveries)

    def status(self) -> dict[str, Any]:
        """For ``/status``: the topic, its encoding and the tool calls read so far."""
        return {"topic": self.topic, "encoding": self.encoding, "tool_calls": self.tool_calls}

    async def _consume(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            await self.handle(message.partition, message.offset, event.key, event.value)
            yield None
