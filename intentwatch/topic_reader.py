"""Read intentwatch's topics from outside the worker: once up to their end, or following them.

Waits are bounded (``timeout`` seconds without progress) and Kafka trouble raises the
SDK's :class:`~intentwatch.sdk.errors.IntentwatchError` with a hint; a topic is never
created by reading it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from intentwatch.contracts import parse_bootstrap
from intentwatch.sdk.errors import KafkaUnavailable, bad_address, missing_topic

__all__ = ["follow_topics", "read_topics"]


def read_topics(
    bootstrap: str, topics: Iterable[str], *, timeout: float = 10.0
) -> Iterator[ConsumerRecord]:
    """Every record of ``topics``, from their beginning up to where they end now."""
    consumer = _assigned(bootstrap, topics, timeout)
    try:
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(list(consumer.assignment()))
        remaining = {tp for tp, end in ends.items() if consumer.position(tp) < end}
        deadline = time.monotonic() + timeout
        while remaining:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                yield from records
            if batch:
                deadline = time.monotonic() + timeout
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
            if remaining and time.monotonic() > deadline:
                raise KafkaUnavailable(bootstrap, f"no records for {timeout:g} s while reading")
    finally:
        consumer.close()


def follow_topics(
    bootstrap: str, topics: Iterable[str], *, from_beginning: bool = False, timeout: float = 10.0
) -> Iterator[ConsumerRecord]:
    """The records of ``topics`` as they arrive (after their current end, unless
    ``from_beginning``), until the caller stops iterating."""
    consumer = _assigned(bootstrap, topics, timeout)
    try:
        if from_beginning:
            consumer.seek_to_beginning()
        else:
            consumer.seek_to_end()
        for partition in consumer.assignment():
            consumer.position(partition)  # fix the start now: nothing published later is missed
        while True:
            for records in consumer.poll(timeout_ms=500).values():
                yield from records
    finally:
        consumer.close()


def _assigned(bootstrap: str, topics: Iterable[str], timeout: float) -> KafkaConsumer:
    try:
        servers = parse_bootstrap(bootstrap)
    except ValueError as error:
        raise bad_address(error) from None
    wait_ms = int(timeout * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=servers, client_id="intentwatch-cli", enable_auto_commit=False,
            allow_auto_create_topics=False, bootstrap_timeout_ms=wait_ms,
            request_timeout_ms=max(wait_ms, 1000), reconnect_backoff_max_ms=1000,
            fetch_max_wait_ms=100, isolation_level="read_committed",  # the workers' transactions
        )
    except KafkaError as error:
        raise KafkaUnavailable(bootstrap, f"no answer within {timeout:g} s "
                               f"({type(error).__name__})") from None
    partitions = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            consumer.close()
            raise missing_topic(topic, bootstrap)
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    return consumer
