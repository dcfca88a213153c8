"""Stream time: event time that moves on with the log, never with this process's clock.

Every decision that depends on time (grace periods, grant expiry, quiet tasks)
reads stream time, so reading the same log again gives the same decisions. A data
record moves it to its event time. Between data records, the tick records that
workers write into the log (at their wall clock) move it on by the wall time that
passed since the newest event was read, never past the tick itself: live it
follows the wall clock; when history is replayed through the log faster than real
time it follows the events, so grace periods and expiry mean what they meant when
the events happened. An event time from the future moves it no further than
``max_skew`` past the last tick.

>>> clock = LogClock()
>>> clock.tick(1000.0), clock.observe(50.0)   # nothing to move before the first event
(-inf, 50.0)
>>> clock.tick(1001.0)                         # a wall second later
51.0
>>> clock.observe(10_000.0)                    # from the future: capped at the last tick + 5
1006.0
>>> clock.state() == LogClock.from_state(clock.state()).state()
True
"""

from __future__ import annotations

import math

__all__ = ["LogClock"]


class LogClock:
    """Monotonic stream time of one log (one partition of the input topic)."""

    __slots__ = ("_anchor_event", "_anchor_wall", "_wall", "max_skew", "now")

    def __init__(self, *, max_skew: float = 5.0) -> None:
        self.max_skew = max_skew
        self.now = -math.inf
        """The current stream time (``-inf`` before any event)."""
        self._wall = math.inf
        """The newest tick's time (``inf`` before any: no cap on event times)."""
        self._anchor_event = -math.inf
        self._anchor_wall = math.inf
        """The newest event time that moved the clock, and the newest tick then."""

    def observe(self, event_ts: float) -> float:
        """Account for a data record's event time; return stream time after it."""
        candidate = min(event_ts, self._wall + self.max_skew)  # no cap before a tick
        if candidate > self.now:
            self.now, self._anchor_event, self._anchor_wall = candidate, candidate, self._wall
        return self.now

    def tick(self, wall_ts: float) -> float:
        """Account for a tick record written at ``wall_ts``; return stream time after it."""
        self._wall = wall_ts if self._wall == math.inf else max(self._wall, wall_ts)
        if self._anchor_event > -math.inf:
            if self._anchor_wall == math.inf:  # the event came before the first tick
                self._anchor_wall = self._wall
            moved = self._anchor_event + (self._wall - self._anchor_wall)
            self.now = max(self.now, min(moved, self._wall))
        return self.now

    @property
    def wall(self) -> float:
        """The newest tick's time (``inf`` before any): the wall clock as the log records it.
        A record read after that tick was published after it."""
        return self._wall

    def state(self) -> tuple[float, float, float, float]:
        """What the clock knows, to keep with the partition's state."""
        return self.now, self._wall, self._anchor_event, self._anchor_wall

    @classmethod
    def from_state(cls, state: tuple[float, float, float, float]) -> LogClock:
        clock = cls()
        clock.now, clock._wall, clock._anchor_event, clock._anchor_wall = state
        return clock
