"""Dead letters: a record the worker cannot use, kept with where it came from and why.

The key is the original key and the value the original bytes, both cut to a size
far below the broker's message limit (a record of any size can be dead-lettered);
the headers (:class:`~intentwatch.contracts.DeadLetterHeaders`) name the source topic,
partition, offset, the reason (a rejection's ``code``, else the error class), the
message, and the original value's size and SHA-256.

>>> from intentwatch.contracts import ContractError
>>> letter = dead_letter("intentwatch.events.v1", 3, 17, b"k", b"x" * 70_000,
...                      ContractError("tool call: bad"))
>>> headers = dict(letter.headers)
>>> len(letter.value), headers["dlq.original.size"], headers["dlq.error.class"]
(65536, b'70000', b'ContractError')
>>> headers["dlq.source.topic"], headers["dlq.source.offset"], headers["dlq.original.sha256"][:8]
(b'intentwatch.events.v1', b'17', b'bca09f4a')
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from intentwatch.contracts import LIMITS, DeadLetterHeaders
from intentwatch.pipeline.decoding import reason_of

__all__ = ["DeadLetter", "DeadLetterLog", "dead_letter"]

_MAX_MESSAGE = 1000
_MAX_KEY = 2048
"""Bytes of a dead letter's key: a valid key is a SPIFFE ID of at most this many."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record for ``intentwatch.dlq.v1``."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
) -> DeadLetter:
    """The dead letter of the record at ``topic/partition/offset``, bounded in size."""
    value = value or b""
    reason = reason_of(error)
    headers = [
        (DeadLetterHeaders.SOURCE_TOPIC, topic.encode()),
        (DeadLetterHeaders.SOURCE_PARTITION, str(partition).encode()),
        (DeadLetterHeaders.SOURCE_OFFSET, str(offset).encode()),
        (DeadLetterHeaders.ERROR_CLASS, reason.encode()[:_MAX_MESSAGE]),
        (DeadLetterHeaders.ERROR_MESSAGE, str(error).encode()[:_MAX_MESSAGE]),
        (DeadLetterHeaders.ORIGINAL_SIZE, str(len(value)).encode()),
        (DeadLetterHeaders.ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
    if key is not None and len(key) > _MAX_KEY:
        headers.append((DeadLetterHeaders.ORIGINAL_KEY_SIZE, str(len(key)).encode()))
        key = key[:_MAX_KEY]
    return DeadLetter(key, value[: LIMITS.RECORD_BYTES], headers, reason)


class DeadLetterLog:
    """Log dead letters one line per reason, at most once per ``interval`` seconds each.

    A flood of bad records (one agent sending garbage) must not flood the log, nor
    hide a rarer reason: each reason has its own budget, and the next line says how
    many were not logged. Only the reason and the message are logged, never the record.

    >>> clock = iter([0.0, 1.0, 2.0, 61.0]).__next__
    >>> log = DeadLetterLog(interval=60.0, clock=clock)
    >>> [log.line("too_large", "2 MB") for _ in range(4)]
    ['too_large: 2 MB', None, None, 'too_large: 2 MB (2 more since the last line)']
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def line(self, reason: str, message: str) -> str | None:
        """The line to log for this dead letter now, or ``None`` while its reason is muted."""
        now = self._clock()
        if now - self._last.get(reason, -self.interval) < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return None
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        return f"{reason}: {message}" + (f" ({more} more since the last line)" if more else "")

    def log(self, logger: logging.Logger, where: str, reason: str, error: BaseException) -> None:
        """Log ``error`` (one line, no traceback) unless its reason is muted."""
        line = self.line(reason, str(error).removeprefix(f"{reason}: ")[:_MAX_MESSAGE])
        if line is not None:
            logger.warning("dead letter %s (%s)", where, line)


