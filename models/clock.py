"""Stream time: event time that keeps moving with the wall clock between events.

Live, it equals the wall clock (less the transport lag). When history is
replayed through the stream faster than real time, it follows the events, so
grace periods and grant expiry mean the same as they did when the events
happened. An event time from the future moves it no further than ``max_skew`` past the wall clock.

>>> wall = iter([100.0, 101.0, 103.0]).__next__
>>> clock = StreamClock(wall=wall)
>>> clock.observe(50.0)   # an old event: stream time is its time
50.0
>>> clock.now()           # one wall second later
51.0
>>> clock.observe(10_000.0)  # from the future: capped at wall clock + max_skew
108.0
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["StreamClock"]


class StreamClock:
    """Monotonic stream time anchored at the newest event seen."""

    def __init__(self, *, max_skew: float = 5.0, wall: Callable[[], float] = time.time) -> None:
        self.max_skew = max_skew
        self._wall = wall
        self._anchor_event: float | None = None
        self._anchor_wall = 0.0

    def now(self) -> float:
        """The current stream time (the wall clock before any event is seen)."""
        return self._at(self._wall())

    def observe(self, event_ts: float) -> float:
        """Account for an event's time and return the stream time after it."""
        wall = self._wall()
        current = self._at(wall)
        candidate = min(event_ts, wall + self.max_skew)
        if self._anchor_event is None or candidate > current:
            self._anchor_event, self._anchor_wall = candidate, wall
            return candidate
        return current

    def _at(self, wall: float) -> float:
        if self._anchor_event is None:
            return wall
        return min(self._anchor_event + (wall - self._anchor_wall), wall + self.max_skew)
