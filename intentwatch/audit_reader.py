"""Read the whole audit topic once: every approved-vs-actual record so far."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from kafka import KafkaConsumer, TopicPartition

from intentwatch.contracts import TOPICS, AuditRecord

__all__ = ["read_audit_records"]

_decoder = msgspec.json.Decoder(AuditRecord)


def read_audit_records(bootstrap: str, *, timeout: float = 10.0) -> Iterator[AuditRecord]:
    """Yield the audit records from the beginning of the topic up to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed",
                             consumer_timeout_ms=int(timeout * 1000))
    try:
        partitions = consumer.partitions_for_topic(TOPICS["audit"]) or set()
        assigned = [TopicPartition(TOPICS["audit"], p) for p in sorted(partitions)]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning()
        remaining = {tp: end for tp, end in consumer.end_offsets(assigned).items() if end > 0}
        for message in consumer:
            tp = TopicPartition(message.topic, message.partition)
            yield _decoder.decode(message.value)
            if message.offset + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)
            if not remaining:
                return
    finally:
        consumer.close()
