"""One stream's SETs not yet acknowledged, in the order they were read, and its cursor.

Revocations are read from Kafka; each becomes an entry of every stream's
:class:`Outbox` that has not passed its offset. An entry leaves the outbox when
the receiver acknowledges it (poll ``ack`` or ``setErrs``, a push answered
``202`` or ``400``). :meth:`Outbox.cursor` is, per source partition, the first
offset some entry still needs: the transmitter stores it, and after a restart
reads again from there, so every SET reaches the stream at least once and in
the order of its partition (one agent's revocations in the order they were
decided).

>>> box = Outbox({"rev:0": 10})
>>> box.offer("rev:0", 9, "old", "t9"), box.offer("rev:0", 10, "j10", "t10")
(False, True)
>>> _ = box.offer("rev:0", 11, "j11", "t11")
>>> [entry.jti for entry in box.take(10, now=0.0)], box.cursor()
(['j10', 'j11'], {'rev:0': 10})
>>> box.ack(["j10"]), box.cursor()
(1, {'rev:0': 11})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Entry", "Outbox"]


@dataclass(slots=True)
class Entry:
    """One SET on its way to a receiver."""

    jti: str
    token: str
    source: str | None
    """``"topic:partition"`` it was read from; ``None`` for the transmitter's own events."""
    offset: int
    sent_at: float | None = None
    """When a poll last returned it (monotonic seconds)."""


class Outbox:
    """The SETs of one stream that its receiver has not acknowledged, oldest first.

    Parameters
    ----------
    cursor
        Where delivery stands: ``"topic:partition"`` -> first offset to deliver.
    limit
        Most entries held; past it the oldest is dropped (and counted in ``dropped``),
        e.g. while a stream is paused for long or a receiver stops polling.
    """

    def __init__(self, cursor: Mapping[str, int], *, limit: int = 100_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._seen = dict(cursor)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, source: str, offset: int) -> bool:
        """Whether the stream is not yet past ``source``/``offset``."""
        return offset >= self._seen.get(source, 0)

    def offer(self, source: str, offset: int, jti: str, token: str) -> bool:
        """Queue the SET read at ``source``/``offset`` unless the stream is past it."""
        if not self.wants(source, offset):
            return False
        self._seen[source] = offset + 1
        if jti in self._entries:  # the same revocation published twice
            return False
        self._add(Entry(jti, token, source, offset))
        return True

    def skip(self, source: str, offset: int) -> None:
        """A record this stream does not get (another event type, disabled): move past it."""
        self._seen[source] = max(self._seen.get(source, 0), offset + 1)

    def add(self, jti: str, token: str) -> None:
        """Queue one of the transmitter's own SETs (a verification event).

        These are held in memory only: after a restart the receiver asks again.
        """
        self._add(Entry(jti, token, None, -1))

    def take(self, max_events: int, *, now: float, redeliver_after: float = 30.0) -> list[Entry]:
        """Up to ``max_events`` entries to send, oldest first, marked sent at ``now``.

        An entry already sent is offered again once ``redeliver_after`` seconds
        passed without an acknowledgement.
        """
        taken: list[Entry] = []
        for entry in self._entries.values():
            if len(taken) >= max_events:
                break
            if entry.sent_at is None or now - entry.sent_at >= redeliver_after:
                entry.sent_at = now
                taken.append(entry)
        return taken

    def ready(self, *, now: float, redeliver_after: float = 30.0) -> bool:
        """Whether :meth:`take` would return something."""
        return any(entry.sent_at is None or now - entry.sent_at >= redeliver_after
                   for entry in self._entries.values())

    def head(self) -> Entry | None:
        """The oldest entry (push delivers strictly one after the other)."""
        return next(iter(self._entries.values()), None)

    def ack(self, jtis: Iterable[str]) -> int:
        """Forget acknowledged entries; returns how many there were."""
        return sum(self._entries.pop(jti, None) is not None for jti in jtis)

    def clear(self) -> None:
        """Drop every entry (a disabled stream holds nothing)."""
        self._entries.clear()

    def cursor(self) -> dict[str, int]:
        """Per source partition, the first offset still needed: where to read again from."""
        cursor = dict(self._seen)
        for entry in reversed(self._entries.values()):
            if entry.source is not None:
                cursor[entry.source] = min(cursor[entry.source], entry.offset)
        return cursor

    def wake(self) -> None:
        """Wake whoever waits in :meth:`wait` (new entries, a status change)."""
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        """Wait until :meth:`wake` is called or ``timeout`` seconds pass."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _add(self, entry: Entry) -> None:
        self._entries[entry.jti] = entry
        if len(self._entries) > self.limit:
            self._entries.popitem(last=False)
            self.dropped += 1
        self.wake()
