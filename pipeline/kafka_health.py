"""Whether the worker reaches Kafka: one log line per outage, and what /status, /health
and /ready say.

During an outage the Kafka client logs its connection errors many times a second;
:class:`OutageFilter` drops them and tells :class:`KafkaHealth`, which logs the outage
once, reminds with growing intervals (10 s, 20 s, 40 s ... at most every 10 min) and
logs its end. A probe (a TCP connection to a bootstrap server, every second) decides
when Kafka is back.

>>> health = KafkaHealth("127.0.0.1:9092", clock=iter([0.0, 5.0, 12.0, 13.0]).__next__)
>>> health.unreachable("Unable connect to node with id 1")      # logged
>>> health.unreachable("Unable connect to node with id 1")      # 5 s in: quiet
>>> health.unreachable("Unable connect to node with id 1")      # 12 s in: reminded
>>> health.status()["reachable"], health.reachable_again()       # 13 s: back, logged
(False, 13.0)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from intentwatch.contracts import format_ts, parse_bootstrap

__all__ = ["CLIENT_LOGGERS", "KafkaHealth", "OutageFilter"]

log = logging.getLogger(__name__)

CLIENT_LOGGERS = (
    "aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator", "aiokafka.consumer.consumer",
    "aiokafka.producer.sender", "aiokafka.producer.producer",
)
"""The Kafka client's loggers whose records :class:`OutageFilter` sees."""

_CONNECTION_TROUBLE = (
    "Unable connect to node", "Connect call failed", "Unable to update metadata",
    "NodeNotReadyError", "KafkaConnectionError", "Connection at",
)
_RETRIED = (
    "NotLeaderForPartitionError", "LeaderNotAvailableError",
    "GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError",
)
"""Transient errors the client retries by itself (a broker stopping or a leader moving
shows them once per partition): dropped, they do not say that Kafka is unreachable."""
_REMINDERS = (10.0, 600.0)
"""First and longest interval between two reminders that Kafka is still unreachable."""


class KafkaHealth:
    """The worker's view of its connection to Kafka at ``bootstrap``."""

    def __init__(self, bootstrap: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap = bootstrap
        self._servers = [(host, int(port)) for host, _, port in
                         (server.rpartition(":") for server in parse_bootstrap(bootstrap))]
        self._clock = clock
        self._since: float | None = None
        self._since_wall: float | None = None
        self._error: str | None = None
        self._remind_at = 0.0
        self._interval = _REMINDERS[0]

    @property
    def reachable(self) -> bool:
        return self._since is None

    def unreachable(self, error: str) -> None:
        """Kafka did not answer (``error`` says how): log it once, remind now and then."""
        now = self._clock()
        if self._since is None:
            self._since, self._since_wall, self._error = now, time.time(), error
            self._remind_at, self._interval = now + _REMINDERS[0], _REMINDERS[0]
            log.error("Kafka at %s is unreachable (%s): nothing is judged until it answers "
                      "again; retrying", self.bootstrap, error)
        elif now >= self._remind_at:
            self._interval = min(self._interval * 2, _REMINDERS[1])
            self._remind_at = now + self._interval
            log.error("Kafka at %s is still unreachable after %.0f s", self.bootstrap,
                      now - self._since)

    def reachable_again(self) -> float | None:
        """Kafka answers: log how long it did not (returns those seconds, if it did not)."""
        if self._since is None:
            return None
        seconds = self._clock() - self._since
        self._since = self._since_wall = self._error = None
        log.warning("Kafka at %s answers again after %.0f s", self.bootstrap, seconds)
        return seconds

    async def probe(self) -> None:
        """Try a TCP connection to each bootstrap server; one that answers means reachable."""
        for host, port in self._servers:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError) as error:
                failure = f"{host}:{port}: {error or type(error).__name__}"
                continue
            writer.close()
            self.reachable_again()
            return
        self.unreachable(failure)

    def status(self) -> dict[str, Any]:
        """For ``/status``, ``/health`` and ``/ready``."""
        return {
            "bootstrap": self.bootstrap, "reachable": self.reachable,
            "unreachable_since": format_ts(self._since_wall) if self._since_wall else None,
            "error": self._error,
        }


class OutageFilter(logging.Filter):
    """Drops the Kafka client's connection errors, telling ``health`` instead, the
    transient errors it retries itself, and all its other warnings while Kafka is
    unreachable (they are consequences of the outage)."""

    def __init__(self, health: KafkaHealth) -> None:
        super().__init__()
        self.health = health

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if any(marker in message for marker in _CONNECTION_TROUBLE):
            self.health.unreachable(message)
            return False
        if any(marker in message for marker in _RETRIED):
            return False
        return self.health.reachable

    def install(self) -> None:
        """Filter every logger of :data:`CLIENT_LOGGERS`."""
        for name in CLIENT_LOGGERS:
            logging.getLogger(name).addFilter(self)
