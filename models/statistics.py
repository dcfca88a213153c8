"""Statistics the detectors are made of: decaying counts, running mean and variance, and
their levels (agent, role, fleet), as river's ``stats`` are for its estimators.

>>> counts = DecayingCounts(half_life=1000, max_size=8)
>>> for value in "aab":
...     counts.learn_one(value)
>>> round(counts.backoff("a", parent=0.5, prior=1.0), 3)
0.542
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from intentwatch.models.learned import Counts, Stats

if TYPE_CHECKING:
    from intentwatch.models.features import Observation

__all__ = ["AGENT", "ROLE", "DecayingCounts", "EWStats", "Levels", "blend", "ramp"]

AGENT, ROLE = 0, 1
"""The levels of what was learned of one scope: an agent's, a role's."""


class DecayingCounts:
    """Exponentially decaying counts of values, with a cap on how many are tracked.

    Decay is per learned value (``half_life`` learns halve every count), done
    lazily: the increment grows instead of every count shrinking. When the cap
    is reached the least-weighted eighth of values is evicted. ``novel`` is
    the decayed number of learns whose value was not tracked yet, so
    ``novelty()`` estimates how often this source produces a new value.

    >>> counts = DecayingCounts(half_life=2, max_size=3)
    >>> for value in "aab":
    ...     counts.learn_one(value)
    >>> round(counts.count("a"), 3), round(counts.count("b"), 3), counts.count("z")
    (1.207, 1.0, 0.0)
    """

    __slots__ = ("_decay", "_inc", "_novel", "_total", "_weights", "max_size")

    def __init__(self, half_life: float, max_size: int) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self.max_size = max_size
        self._weights: dict[Hashable, float] = {}
        self._inc = 1.0
        self._total = 0.0
        self._novel = 0.0

    def __len__(self) -> int:
        return len(self._weights)

    def learn_one(self, value: Hashable) -> None:
        inc = self._inc = self._inc / self._decay
        weights = self._weights
        weight = weights.get(value)
        if weight is None:
            self._novel += inc
            if len(weights) >= self.max_size:
                self._evict()
            weights[value] = inc
        else:
            weights[value] = weight + inc
        self._total += inc
        if inc > 1e100:
            self._rescale()

    def count(self, value: Hashable) -> float:
        """Decayed number of times ``value`` was learned."""
        return self._weights.get(value, 0.0) / self._inc

    @property
    def total(self) -> float:
        """Decayed number of learns (the evidence behind the counts)."""
        return self._total / self._inc

    def novelty(self, prior: float) -> float:
        """Share of learns that brought a new value, shrunk towards 1 by ``prior`` pseudo-learns."""
        return (self._novel / self._inc + prior) / (self._total / self._inc + prior)

    def backoff(self, value: Hashable, parent: float, prior: float) -> float:
        """``(1 - ν) · count(value) / total + ν · parent`` with ``ν = novelty(prior)``."""
        total = self._total
        if not total:
            return parent
        pseudo = prior * self._inc
        novelty = (self._novel + pseudo) / (total + pseudo)
        return (1.0 - novelty) * self._weights.get(value, 0.0) / total + novelty * parent

    def to_data(self) -> Counts:
        """What was counted, as data (:class:`~intentwatch.models.learned.Counts`)."""
        weights = self._weights
        values: list[Any] = list(weights)  # the detectors' values are learned.Value
        return Counts(values, list(weights.values()), self._inc, self._total, self._novel)

    def load(self, data: Counts) -> None:
        """Take over what :meth:`to_data` gave (of counts with the same half-life and cap).

        >>> counts, twin = DecayingCounts(2, 3), DecayingCounts(2, 3)
        >>> counts.learn_one("a")
        >>> twin.load(counts.to_data())
        >>> twin.count("a") == counts.count("a") == 1.0
        True
        """
        self._weights = dict(zip(data.values, data.weights, strict=True))
        self._inc, self._total, self._novel = data.inc, data.total, data.novel

    def _evict(self) -> None:
        weights = self._weights
        drop = sorted(weights, key=weights.__getitem__)[: max(1, len(weights) // 8)]
        for value in drop:
            del weights[value]

    def _rescale(self) -> None:
        scale = 1.0 / self._inc
        self._weights = {value: w * scale for value, w in self._weights.items()}
        self._total *= scale
        self._novel *= scale
        self._inc = 1.0


class EWStats:
    """Exponentially weighted mean and variance with an evidence count.

    >>> stats = EWStats()
    >>> for value in (1.0, 2.0, 3.0):
    ...     stats.update(value, alpha=0.01)
    >>> round(stats.mean, 2), stats.n
    (2.0, 3)
    """

    __slots__ = ("mean", "n", "var")

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def update(self, value: float, alpha: float) -> None:
        n = self.n = self.n + 1
        rate = 1.0 / n
        if rate < alpha:
            rate = alpha
        delta = value - self.mean
        self.mean += rate * delta
        self.var = (1.0 - rate) * (self.var + rate * delta * delta)

    def to_data(self) -> Stats:
        return Stats(self.mean, self.var, self.n)

    @classmethod
    def from_data(cls, data: Stats) -> EWStats:
        stats = cls()
        stats.mean, stats.var, stats.n = data.mean, data.var, data.n
        return stats


def blend(chain: Sequence[EWStats | None], prior: float) -> tuple[float, float] | None:
    """Mean and variance of the most specific level, shrunk towards the levels above.

    ``chain`` runs from the most specific level (agent) to the most general
    (fleet); a level with ``n`` observations gets weight ``n / (n + prior)``.
    None when no level has any observation.
    """
    if len(chain) == 3:  # agent, role, fleet: the hot path, unrolled
        agent, role, fleet = chain
        if fleet is not None and fleet.n:
            mean, var, seen = fleet.mean, fleet.var, True
        else:
            mean = var = 0.0
            seen = False
        for stats in (role, agent):
            if stats is None or not stats.n:
                continue
            if seen:
                n = stats.n
                w = n / (n + prior)
                mean += w * (stats.mean - mean)
                var += w * (stats.var - var)
            else:
                mean, var, seen = stats.mean, stats.var, True
        return (mean, var) if seen else None
    mean = var = 0.0
    seen = False
    for i in range(len(chain) - 1, -1, -1):
        stats = chain[i]
        if stats is None or not stats.n:
            continue
        if seen:
            w = stats.n / (stats.n + prior)
            mean += w * (stats.mean - mean)
            var += w * (stats.var - var)
        else:
            mean, var, seen = stats.mean, stats.var, True
    return (mean, var) if seen else None


def ramp(z: float, bounds: tuple[float, float]) -> float:
    """``z`` mapped linearly from ``bounds`` to [0, 1], clipped.

    >>> ramp(0.0, (1.0, 5.0)), ramp(3.0, (1.0, 5.0)), ramp(9.0, (1.0, 5.0))
    (0.0, 0.5, 1.0)
    """
    low, high = bounds
    return min(1.0, max(0.0, (z - low) / (high - low)))


class Levels:
    """One value per scope (agent, role, fleet) made on demand, with a growing cap per level."""

    __slots__ = ("_factory", "agents", "fleet", "roles")

    def __init__(self, factory: Callable[[int], Any]) -> None:
        self._factory = factory
        self.agents: dict[str, Any] = {}
        self.roles: dict[str, Any] = {}
        self.fleet = factory(2)

    def get(self, x: Observation) -> tuple[Any, Any, Any]:
        return self.agents.get(x.agent_id), self.roles.get(x.role), self.fleet

    def scopes(self, level: int) -> dict[str, Any]:
        """The values of level 0 (by agent) or 1 (by role)."""
        return self.roles if level == ROLE else self.agents

    def make(self, level: int) -> Any:
        """A fresh value for level 0 (an agent), 1 (a role) or 2 (the fleet)."""
        return self._factory(level)

    def for_learning(self, x: Observation) -> tuple[Any, Any, Any]:
        agent = self.agents.get(x.agent_id)
        if agent is None:
            agent = self.agents[x.agent_id] = self._factory(0)
        role = self.roles.get(x.role)
        if role is None:
            role = self.roles[x.role] = self._factory(1)
        return agent, role, self.fleet

