"""Getting a publisher's records to Kafka, and what happens when Kafka is not there.

Every wait is bounded by ``timeout`` (seconds, default :data:`DEFAULT_TIMEOUT`), and
every Kafka problem surfaces as :class:`~intentwatch.sdk.errors.IntentwatchError` (a
:class:`~intentwatch.sdk.errors.PublishError` for records) with a hint. Two policies:

``fail_closed`` (the default)
    Kafka must answer when the publisher starts. Before an instrumented tool runs,
    everything published before it must have been acknowledged (:meth:`Delivery.
    ensure_delivered`), else the tool does not run and the call raises. Only a call
    already past that check when Kafka goes away runs without being reported.
``fail_open``
    Tools always run. Records wait in a bounded local buffer while Kafka is
    unreachable, including at start, and are sent in order when it returns: at most
    ``buffer_size`` records are unacknowledged at a time; beyond that new records are
    dropped and counted (:attr:`Delivery.dropped`). :meth:`Delivery.flush` and ``close`` say what is
    still undelivered.

Topics are never created by publishing: a missing topic is an error naming the
command that creates it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from intentwatch.contracts import parse_bootstrap
from intentwatch.sdk.errors import (
    IntentwatchError,
    KafkaUnavailable,
    PublishError,
    bad_address,
    missing_topic,
)

__all__ = ["DEFAULT_BUFFER", "DEFAULT_TIMEOUT", "Delivery", "Policy"]

log = logging.getLogger("intentwatch.sdk.publisher")

Policy = Literal["fail_closed", "fail_open"]
DEFAULT_TIMEOUT = 5.0
"""Seconds any publisher call waits for Kafka at most."""
DEFAULT_BUFFER = 10_000
"""Records a ``fail_open`` publisher keeps while Kafka is unreachable."""
_OPEN_DELIVERY_SECONDS = 3600.0
"""How long a ``fail_open`` record handed to the Kafka client may wait for the broker."""
_RETRY_SECONDS = (0.2, 5.0)
"""First and longest pause between two attempts of the ``fail_open`` sender."""

_Record = tuple[str, bytes, bytes, int, list[tuple[str, bytes]]]
"""Topic, key, value, timestamp ms, headers."""


class Delivery:
    """The Kafka side of a :class:`~intentwatch.sdk.publisher.TelemetryPublisher`.

    ``topics`` are checked to exist when Kafka is first reached; ``producer_config``
    goes to :class:`kafka.KafkaProducer` (TLS, SASL, ``linger_ms`` ...).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topics: Iterable[str],
        policy: Policy = "fail_closed",
        timeout: float = DEFAULT_TIMEOUT,
        buffer_size: int = DEFAULT_BUFFER,
        client_id: str = "intentwatch-publisher",
        **producer_config: Any,
    ) -> None:
        if policy not in ("fail_closed", "fail_open"):
            raise ValueError(f"policy must be 'fail_closed' or 'fail_open', got {policy!r}")
        if not timeout > 0 or buffer_size < 1:
            raise ValueError("timeout must be positive and buffer_size at least 1")
        try:
            servers = parse_bootstrap(bootstrap)
        except ValueError as error:
            raise bad_address(error) from None
        self.bootstrap = bootstrap
        self.policy: Policy = policy
        self.timeout = timeout
        self.dropped = 0
        """Records a ``fail_open`` publisher dropped because its buffer was full."""
        self._topics = tuple(topics)
        wait_ms = int(timeout * 1000)
        delivery_s = timeout if policy == "fail_closed" else _OPEN_DELIVERY_SECONDS
        self._config: dict[str, Any] = {
            "bootstrap_servers": servers, "client_id": client_id, "acks": "all",
            "enable_idempotence": True, "allow_auto_create_topics": False,
            "bootstrap_timeout_ms": wait_ms, "max_block_ms": wait_ms,
            "request_timeout_ms": wait_ms, "reconnect_backoff_max_ms": 1000,
            **producer_config,
        }
        self._config.setdefault(
            "delivery_timeout_ms", int(delivery_s * 1000) + self._config.get("linger_ms", 0)
        )
        self._lock = threading.Condition()
        self._failures: list[str] = []
        self._buffer: deque[_Record] = deque()
        self._unacknowledged = 0
        self._buffer_size = buffer_size
        self._closing = False
        self._producer: KafkaProducer | None = None
        self._thread: threading.Thread | None = None
        if policy == "fail_closed":
            self._producer = self._connect()
        else:
            self._thread = threading.Thread(target=self._run, name="intentwatch-publisher",
                                            daemon=True)
            self._thread.start()

    @property
    def waiting(self) -> int:
        """Records sent but not yet acknowledged by Kafka."""
        return len(self._buffer) + self._unacknowledged

    def send(
        self, topic: str, key: bytes, value: bytes, timestamp_ms: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send one record (``fail_closed``: waits at most ``timeout`` to hand it over)."""
        if self._closing:
            raise PublishError("the publisher is closed", "make a new TelemetryPublisher")
        if self._thread is None:
            self._hand_over(self._live(), (topic, key, value, timestamp_ms, headers or []))
            return
        with self._lock:
            if len(self._buffer) + self._unacknowledged >= self._buffer_size:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % self._buffer_size == 0:
                    log.warning("Kafka at %s unreachable and %d records buffered: %d record(s) "
                                "dropped so far", self.bootstrap, self.waiting, self.dropped)
                return
            self._buffer.append((topic, key, value, timestamp_ms, headers or []))
            self._lock.notify_all()

    def ensure_delivered(self) -> None:
        """``fail_closed``: return once everything sent so far is acknowledged, or raise
        :class:`PublishError` (within ``timeout``). ``fail_open``: return at once."""
        if self._thread is None:
            lost = len(self._failures)
            self._flush_producer(self._live(), self.timeout)
            if len(self._failures) > lost:  # (flush and close report what was lost)
                raise KafkaUnavailable(self.bootstrap, "earlier records were not "
                                       f"acknowledged within {self.timeout:g} s")

    def flush(self, timeout: float | None = None) -> None:
        """Wait until Kafka acknowledged everything sent (at most ``timeout``, default the
        publisher's); raise :class:`PublishError` for what was not delivered."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._buffer and self._lock.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._buffer:
                raise KafkaUnavailable(
                    self.bootstrap,
                    f"{len(self._buffer)} record(s) still buffered after {timeout:g} s"
                    + (f" ({self.dropped} dropped)" if self.dropped else ""),
                )
        if self._producer is not None:
            self._flush_producer(self._producer, max(0.0, deadline - time.monotonic()))
        self.raise_failures()

    def raise_failures(self) -> None:
        """Raise :class:`PublishError` once for records Kafka refused or never took."""
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise PublishError(
                f"{len(failures)} record(s) were not delivered to Kafka at {self.bootstrap} "
                f"(first: {failures[0]})",
                "they are lost: is a broker running there? `intentwatch kafka up` starts a "
                "local one",
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout``), then release the connection."""
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closing = True
                self._lock.notify_all()
            if self._thread is not None:
                self._thread.join(self.timeout)
            if self._producer is not None:
                self._producer.close(timeout=self.timeout)

    # -- internals ----------------------------------------------------------------------

    def _connect(self) -> KafkaProducer:
        try:
            producer = KafkaProducer(**self._config)
        except KafkaError as error:
            raise KafkaUnavailable(self.bootstrap, f"no answer within {self.timeout:g} s "
                                   f"({type(error).__name__})") from None
        for topic in self._topics:
            try:
                producer.partitions_for(topic)
            except KafkaTimeoutError:
                producer.close(timeout=0)
                raise missing_topic(topic, self.bootstrap) from None
        return producer

    def _live(self) -> KafkaProducer:
        assert self._producer is not None, "a fail_closed publisher connects when it starts"
        return self._producer

    def _hand_over(self, producer: KafkaProducer, record: _Record) -> None:
        topic, key, value, timestamp_ms, headers = record
        try:
            future = producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms,
                                   headers=headers)
        except KafkaTimeoutError:
            raise KafkaUnavailable(
                self.bootstrap, f"a record for {topic} was not taken within {self.timeout:g} s"
            ) from None
        with self._lock:
            self._unacknowledged += 1
        future.add_callback(self._on_delivered)
        future.add_errback(self._on_error, topic)

    def _flush_producer(self, producer: KafkaProducer, timeout: float) -> None:
        try:
            producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            raise KafkaUnavailable(
                self.bootstrap, f"records not acknowledged within {timeout:g} s"
            ) from None

    def _on_delivered(self, _metadata: object) -> None:
        with self._lock:
            self._unacknowledged -= 1

    def _on_error(self, error: Exception, topic: str) -> None:
        log.error("record for %s not delivered: %s", topic, error)
        with self._lock:
            self._unacknowledged -= 1
            self._failures.append(f"{topic}: {error}")

    def _run(self) -> None:
        """``fail_open``: connect, then hand buffered records to Kafka in order."""
        pause, reported = _RETRY_SECONDS[0], False
        while True:
            with self._lock:
                while not self._buffer and not self._closing:
                    self._lock.wait()
                if not self._buffer:
                    return
                record = self._buffer[0]
            try:
                if self._producer is None:
                    self._producer = self._connect()
                self._hand_over(self._producer, record)
            except IntentwatchError as error:
                if not reported:
                    log.warning("%s; records are buffered until it answers", error)
                    reported = True
                if self._wait(pause):
                    return
                pause = min(pause * 2, _RETRY_SECONDS[1])
                continue
            if reported:
                log.warning("Kafka at %s answers again", self.bootstrap)
            pause, reported = _RETRY_SECONDS[0], False
            with self._lock:
                self._buffer.popleft()
                self._lock.notify_all()

    def _wait(self, seconds: float) -> bool:
        """Pause the sender; True if the publisher closes meanwhile."""
        with self._lock:
            self._lock.wait_for(lambda: self._closing, seconds)
            return self._closing

