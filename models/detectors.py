"""The per-agent detectors the :class:`~intentwatch.models.baseline.Baseline` is made of.

Each follows river's shape (:class:`~intentwatch.models.protocol.OnlineDetector`):
``score_one(x)`` judges one :class:`~intentwatch.models.features.Observation`
against what was learned, ``learn_one(x)`` learns it (only for calls of tasks
that ended without revocation), and ``explain(x)`` says in a sentence why the
score is what it is.

Every statistic is kept at three levels: the agent, its role (SPIFFE ID
minus the last segment) and the fleet. A level with little evidence defers to
the one above it, so a brand-new agent is judged by its peers. Counts decay
exponentially per learned call, and every table has a cap on tracked values
(the least-weighted values are evicted), so memory per agent is bounded.

>>> from intentwatch.contracts import ToolCall
>>> from intentwatch.models.catalogue import ToolInfo
>>> from intentwatch.models.features import TaskContext
>>> rarity = Rarity("tool", lambda x: x.tool)
>>> agent = "spiffe://acme.org/agents/support/a1"
>>> lookup = ToolInfo("crm.lookup", "read")
>>> for i in range(200):
...     call = ToolCall(event_id=str(i), ts=i, agent_id=agent, task_id="t", tool="crm.lookup")
...     rarity.learn_one(TaskContext(agent).observe(call, lookup))
>>> new = ToolCall(event_id="n", ts=300.0, agent_id=agent, task_id="t", tool="iam.set_role")
>>> x = TaskContext(agent).observe(new, ToolInfo("iam.set_role", "admin"))
>>> rarity.score_one(x)
1.0
>>> rarity.explain(x)
'tool iam.set_role never seen for this agent (197 recent calls), its role (200) or the fleet (200)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from intentwatch.models.config import settings_from
from intentwatch.models.features import Observation
from intentwatch.models.learned import Counts, KeyedScope, RarityScope
from intentwatch.models.statistics import AGENT, DecayingCounts, EWStats, Levels, blend, ramp

__all__ = [
    "BaselineConfig",
    "Count",
    "FleetNovelty",
    "Habit",
    "KeyedStats",
    "Rarity",
    "Volume",
]


@dataclass(frozen=True)
class BaselineConfig:
    """Memory, decay and scaling of the baselines (``detectors.baseline`` in the config)."""

    half_life_calls: float = 5000.0
    """Agent-level counts halve after this many learned calls of the agent."""
    level_scale: float = 8.0
    """Role and fleet tables remember and track this many times more (per level up)."""
    max_tools: int = 128
    max_targets: int = 1024
    max_sites: int = 512
    max_transitions: int = 1024
    max_fleet_domains: int = 50000
    prior_calls: float = 20.0
    """Evidence (in calls) a level needs before it counts as much as the level above."""
    stats_half_life_calls: float = 500.0
    """Half-life of running means and variances."""
    rarity_z: tuple[float, float] = (0.5, 4.5)
    """Surprisal z-scores mapped to rarity 0 and 1 (linear in between)."""
    surprisal_floor: float = 1.0
    """Smallest spread of surprisal (nats): one rarity unit is never less than this."""
    volume_z: tuple[float, float] = (1.0, 5.0)
    """Volume and rate z-scores (log scale) mapped to 0 and 1."""
    volume_floor: float = 0.5
    """Smallest spread of log volume: differences under ~65% never count as unusual."""
    count_decades: float = 4.0
    """A count whose tail probability is 10^-count_decades scores 1."""
    habit_floor: float = 0.01
    """Share of calls under which a habit counts as never shown."""
    rate_window_seconds: float = 60.0
    growth_ln: tuple[float, float] = (0.8, 1.8)
    """Payload growth within a task, ``ln(bytes / smallest earlier)``, mapped to 0 and 1
    (about 2.2× and 6×)."""
    fleet_novelty_prior_calls: float = 2000.0
    """Fleet calls needed before a never-seen domain counts as fully novel."""
    internal_domains: tuple[str, ...] = ()
    """Registrable domains that are inside the organisation besides the agents' trust domains."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineConfig:
        return settings_from(cls, data, "baseline")


_USUAL_CACHE_SIZE = 65536
"""Blended statistics cached between learns (per detector), cleared when this many."""


class _RarityScope:
    """What a :class:`Rarity` keeps for one agent, role or the fleet."""

    __slots__ = ("contexts", "counts", "surprisal")

    def __init__(self, counts: DecayingCounts, contexts: DecayingCounts | None) -> None:
        self.counts = counts
        self.contexts = contexts
        self.surprisal = EWStats()

    def to_data(self) -> RarityScope:
        contexts = self.contexts.to_data() if self.contexts is not None else None
        return RarityScope(self.counts.to_data(), contexts, self.surprisal.to_data())

    def load(self, data: RarityScope) -> _RarityScope:
        self.counts.load(data.counts)
        if self.contexts is not None and data.contexts is not None:
            self.contexts.load(data.contexts)
        self.surprisal = EWStats.from_data(data.surprisal)
        return self


class Rarity:
    """How rare a categorical value is for this agent, against how rare its values usually are.

    The probability of a value backs off agent → role → fleet: at each level
    ``P(v) = (1 - ν) · count(v) / total + ν · P_parent(v)`` where ``ν`` is how
    often that level meets a new value (so an agent that always talks to new
    recipients is not surprised by one more). The score is the surprisal
    ``-ln P(v)`` as a z-score against the surprisal of the agent's learned
    calls, mapped to [0, 1]. With ``context``, the probability is conditional
    (``P(tool | previous tool)`` for transitions). Values for which ``quiet``
    is true are learned but never scored (a send without sensitive data is no flow).
    """

    def __init__(
        self,
        name: str,
        value: Callable[[Observation], Hashable | None],
        config: BaselineConfig | None = None,
        *,
        max_values: int | None = None,
        context: Callable[[Observation], Hashable] | None = None,
        describe: Callable[[Observation], str] | None = None,
        quiet: Callable[[Any], bool] | None = None,
    ) -> None:
        self.name = name
        self.config = config = config or BaselineConfig()
        self._value = value
        self._context = context
        self._quiet = quiet
        self._describe = describe or (lambda x: f"{name} {value(x)}")
        cap = max_values or config.max_tools
        scale, half_life = config.level_scale, config.half_life_calls

        def scope(level: int) -> _RarityScope:
            size = scale**level
            return _RarityScope(
                DecayingCounts(half_life * size, int(cap * size)),
                DecayingCounts(half_life * size, int(config.max_tools * size)) if context else None,
            )

        self._levels = Levels(scope)
        self._alpha = 1.0 - 0.5 ** (1.0 / config.stats_half_life_calls)
        self._learned = 0
        self._usual: dict[str, tuple[int, float, float]] = {}
        self._prior = config.prior_calls
        self._rarity_z = config.rarity_z

    def probability(self, x: Observation) -> float:
        """Backed-off probability of the value (conditional on the context, if any)."""
        return self._probability(x, self._levels.get(x))

    def _probability(
        self, x: Observation, scopes: tuple[Any, Any, Any], value: Hashable | None = None
    ) -> float:
        agent, role, fleet = scopes
        prior = self._prior
        if value is None:
            value = self._value(x)
        p = fleet.counts.backoff(value, 1.0, prior)
        if role is not None:
            p = role.counts.backoff(value, p, prior)
        if agent is not None:
            p = agent.counts.backoff(value, p, prior)
        if self._context is not None:
            context = self._context(x)
            q = fleet.contexts.backoff(context, 1.0, prior)
            if role is not None:
                q = role.contexts.backoff(context, q, prior)
            if agent is not None:
                q = agent.contexts.backoff(context, q, prior)
            p = min(1.0, p / q)
        return float(p)

    def surprisal(
        self,
        x: Observation,
        scopes: tuple[Any, Any, Any] | None = None,
        value: Hashable | None = None,
    ) -> float:
        """``-ln P(value)`` under what was learned so far."""
        p = self._probability(x, scopes or self._levels.get(x), value)
        return -math.log(max(p, 1e-300))

    def scored_surprisal(self, x: Observation) -> float | None:
        """The surprisal :meth:`score_one` judges ``x`` by (None: it scores 0 without one,
        for no value or a quiet one). Learning the call later takes this one, as scored."""
        value = self._value(x)
        if value is None or (self._quiet is not None and self._quiet(value)):
            return None
        return self.surprisal(x, None, value)

    def score_one(self, x: Observation, surprisal: float | None = None) -> float:
        """``surprisal``: :meth:`scored_surprisal` of ``x``, if already known."""
        value = self._value(x)
        if value is None or (self._quiet is not None and self._quiet(value)):
            return 0.0
        return ramp(self._z(x, value, surprisal), self._rarity_z)

    def _z(
        self, x: Observation, value: Hashable | None = None, surprisal: float | None = None
    ) -> float:
        scopes = agent, role, fleet = self._levels.get(x)
        # The agent's usual surprisal only moves when something is learned: cached per
        # agent until the next learn.
        cached = self._usual.get(x.agent_id)
        if cached is not None and cached[0] == self._learned:
            mean, spread = cached[1], cached[2]
        else:
            usual = blend(
                (agent.surprisal if agent else None, role.surprisal if role else None,
                 fleet.surprisal),
                self.config.prior_calls,
            )
            mean, var = usual if usual else (0.0, 0.0)
            spread = max(math.sqrt(var), self.config.surprisal_floor)
            if len(self._usual) >= _USUAL_CACHE_SIZE:
                self._usual.clear()
            self._usual[x.agent_id] = (self._learned, mean, spread)
        if surprisal is None:
            surprisal = self.surprisal(x, scopes, value)
        return (surprisal - mean) / spread

    def learn_one(self, x: Observation, surprisal: float | None = None) -> None:
        """``surprisal``: the one ``x`` was scored by (else its surprisal now)."""
        value = self._value(x)
        if value is None:
            return
        if surprisal is None:
            surprisal = self.surprisal(x, None, value)
        context = self._context(x) if self._context is not None else None
        self._learned += 1
        for scope in self._levels.for_learning(x):
            scope.surprisal.update(surprisal, self._alpha)
            scope.counts.learn_one(value)
            if scope.contexts is not None:
                scope.contexts.learn_one(context)

    def evidence(self, x: Observation) -> tuple[tuple[float, float], ...]:
        """(count of the value, evidence) at agent, role and fleet level."""
        value = self._value(x)
        context = self._context(x) if self._context is not None else None
        return tuple(
            (0.0, 0.0) if scope is None
            else (scope.counts.count(value), scope.counts.total) if scope.contexts is None
            else (scope.counts.count(value), scope.contexts.count(context))
            for scope in self._levels.get(x)
        )

    def learned(self, agent_id: str, role: str) -> tuple[float, float, float]:
        """Decayed number of values learned from the agent, its role and the fleet."""
        levels = self._levels
        agent, of_role = levels.agents.get(agent_id), levels.roles.get(role)
        return (agent.counts.total if agent is not None else 0.0,
                of_role.counts.total if of_role is not None else 0.0, levels.fleet.counts.total)

    def census(self) -> tuple[int, dict[str, float]]:
        """How many agents have learned values, and each role's decayed number of them."""
        levels = self._levels
        return len(levels.agents), {role: s.counts.total for role, s in levels.roles.items()}

    def scope_state(self, level: int, scope: str) -> RarityScope | None:
        """What was learned of one agent (``level``
        :data:`~intentwatch.models.statistics.AGENT`) or role (``ROLE``) alone, as data
        (None: nothing)."""
        held = self._levels.scopes(level).get(scope)
        return held.to_data() if held is not None else None

    def load_scope_state(self, level: int, scope: str, data: RarityScope) -> None:
        self._levels.scopes(level)[scope] = self._levels.make(level).load(data)
        if level == AGENT:  # what is cached of other agents does not depend on this one
            self._usual.pop(scope, None)
        else:
            self._usual.clear()

    def forget_agent(self, agent_id: str) -> None:
        """Forget what was learned of ``agent_id`` (:meth:`scope_state` gave it)."""
        self._levels.agents.pop(agent_id, None)
        self._usual.pop(agent_id, None)

    def fleet_state(self) -> RarityScope:
        """What was learned of the fleet, as data."""
        fleet: _RarityScope = self._levels.fleet
        return fleet.to_data()

    def load_fleet_state(self, data: RarityScope) -> None:
        self._levels.fleet = self._levels.make(2).load(data)
        self._usual.clear()

    def explain(self, x: Observation) -> str:
        (agent, agent_n), (role, role_n), (fleet, fleet_n) = self.evidence(x)
        what = self._describe(x)
        if agent < 0.5 and role < 0.5:
            where = "its role" + (f" ({role_n:,.0f})" if role_n else "")
            if fleet < 0.5:
                where += f" or the fleet ({fleet_n:,.0f})" if fleet_n else " or the fleet"
            else:
                where += f"; the fleet {fleet:,.0f} times in {fleet_n:,.0f}"
            return f"{what} never seen for this agent ({agent_n:,.0f} recent calls), {where}"
        return (
            f"{what} rare for this agent: {agent:,.0f} of {agent_n:,.0f} calls "
            f"(role {role:,.0f} of {role_n:,.0f}; surprisal {self._z(x):.1f} σ above its usual)"
        )


class FleetNovelty:
    """How new a value is to the whole fleet: 1 for never seen, fading with use.

    Weighed by the fleet's evidence, so a young deployment does not call
    everything new.
    """

    def __init__(
        self,
        name: str,
        value: Callable[[Observation], Hashable | None],
        config: BaselineConfig | None = None,
    ) -> None:
        self.name = name
        self.config = config = config or BaselineConfig()
        self._value = value
        self._counts = DecayingCounts(
            config.half_life_calls * config.level_scale**2, config.max_fleet_domains
        )

    def score_one(self, x: Observation) -> float:
        value = self._value(x)
        if value is None:
            return 0.0
        total = self._counts.total
        confidence = total / (total + self.config.fleet_novelty_prior_calls)
        return confidence / (1.0 + self._counts.count(value))

    def learn_one(self, x: Observation) -> None:
        value = self._value(x)
        if value is not None:
            self._counts.learn_one(value)

    def fleet_state(self) -> Counts:
        return self._counts.to_data()

    def load_fleet_state(self, data: Counts) -> None:
        self._counts.load(data)

    def explain(self, x: Observation) -> str:
        seen = self._counts.count(self._value(x))
        total = self._counts.total
        if seen < 0.5:
            return f"{self.name} {self._value(x)} never seen in the fleet ({total:,.0f} calls)"
        return f"{self.name} {self._value(x)} seen only {seen:,.1f} times in the fleet"


class KeyedStats:
    """Running mean and variance per key (e.g. per tool) at agent, role and fleet level.

    Each level tracks at most ``max_keys`` keys (times ``level_scale`` per
    level up); the key with the least evidence is evicted first.
    """

    def __init__(self, config: BaselineConfig, max_keys: int) -> None:
        self.config = config
        self._levels: Levels = Levels(lambda level: {})
        self._alpha = 1.0 - 0.5 ** (1.0 / config.stats_half_life_calls)
        self._caps = tuple(int(max_keys * config.level_scale**level) for level in range(3))
        self._prior = config.prior_calls

    def usual(self, x: Observation, key: Hashable) -> tuple[float, float] | None:
        """Blended mean and variance for ``key``; None when no level has seen it."""
        levels = self._levels
        agent = levels.agents.get(x.agent_id)
        role = levels.roles.get(x.role)
        return blend(
            (agent.get(key) if agent is not None else None,
             role.get(key) if role is not None else None,
             levels.fleet.get(key)),
            self._prior,
        )

    def learn_one(self, x: Observation, key: Hashable, value: float) -> None:
        alpha = self._alpha
        for per_key, cap in zip(self._levels.for_learning(x), self._caps, strict=True):
            stats = per_key.get(key)
            if stats is None:
                if len(per_key) >= cap:
                    del per_key[min(per_key, key=lambda k: per_key[k].n)]
                stats = per_key[key] = EWStats()
            stats.update(value, alpha)

    def scope_state(self, level: int, scope: str) -> KeyedScope | None:
        """What was learned of one agent or role alone (as :meth:`Rarity.scope_state`)."""
        per_key = self._levels.scopes(level).get(scope)
        return _keyed_data(per_key) if per_key is not None else None

    def load_scope_state(self, level: int, scope: str, data: KeyedScope) -> None:
        self._levels.scopes(level)[scope] = _keyed_stats(data)

    def forget_agent(self, agent_id: str) -> None:
        """Forget what was learned of ``agent_id`` (:meth:`scope_state` gave it)."""
        self._levels.agents.pop(agent_id, None)

    def fleet_state(self) -> KeyedScope:
        return _keyed_data(self._levels.fleet)

    def load_fleet_state(self, data: KeyedScope) -> None:
        self._levels.fleet = _keyed_stats(data)


def _keyed_data(per_key: dict[Hashable, EWStats]) -> KeyedScope:
    return KeyedScope(list(per_key), [s.to_data() for s in per_key.values()])  # type: ignore[arg-type]


def _keyed_stats(data: KeyedScope) -> dict[Hashable, EWStats]:
    return {key: EWStats.from_data(s) for key, s in zip(data.keys, data.stats, strict=True)}


class _KeyedQuantity:
    """A per-call quantity with running statistics per key (e.g. per tool), backing off
    to role and fleet; subclasses say how a value compares with them (and what
    ``describe`` is given to explain it)."""

    def __init__(
        self,
        name: str,
        value: Callable[[Observation], Any],
        config: BaselineConfig | None = None,
        *,
        key: Callable[[Observation], Hashable] = lambda x: None,
        describe: Callable[..., str],
    ) -> None:
        self.name = name
        self.config = config = config or BaselineConfig()
        self._value = value
        self._key = key
        self._describe = describe
        self._stats = KeyedStats(config, config.max_tools)

    def _usual(self, x: Observation) -> tuple[float, float] | None:
        return self._stats.usual(x, self._key(x))

    def scope_state(self, level: int, scope: str) -> KeyedScope | None:
        return self._stats.scope_state(level, scope)

    def load_scope_state(self, level: int, scope: str, data: KeyedScope) -> None:
        self._stats.load_scope_state(level, scope, data)

    def forget_agent(self, agent_id: str) -> None:
        self._stats.forget_agent(agent_id)

    def fleet_state(self) -> KeyedScope:
        return self._stats.fleet_state()

    def load_fleet_state(self, data: KeyedScope) -> None:
        self._stats.load_fleet_state(data)


class Volume(_KeyedQuantity):
    """A numeric quantity (bytes, rate, repeats) against its running statistics, on a log scale.

    Statistics are kept per key (e.g. per tool); only values above the usual
    count (one-sided): the z-score of ``log1p(value)`` is mapped to [0, 1].
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._floor = self.config.volume_floor
        self._bounds = self.config.volume_z

    def z(self, x: Observation) -> float:
        value = self._value(x)
        if value is None:
            return 0.0
        usual = self._usual(x)
        if usual is None:
            return 0.0
        return (math.log1p(value) - usual[0]) / max(math.sqrt(usual[1]), self._floor)

    def score_one(self, x: Observation) -> float:
        return ramp(self.z(x), self._bounds)

    def learn_one(self, x: Observation) -> None:
        value = self._value(x)
        if value is not None:
            self._stats.learn_one(x, self._key(x), math.log1p(value))

    def explain(self, x: Observation) -> str:
        usual = self._usual(x)
        typical = math.expm1(usual[0]) if usual else 0.0
        return self._describe(x, typical, self.z(x))


class Count(_KeyedQuantity):
    """How surprising a count within a task is (calls of a tool, calls on one target).

    The agent's usual count per key has a running mean and variance (backing
    off to role and fleet); the count is modelled as a negative binomial with
    that mean and variance (Poisson when not overdispersed; some tasks loop
    over many records, most do not). The score is its tail ``P(N ≥ n)`` in
    decades, ``-log10(tail) / count_decades``, capped at 1: a burst, not a
    second call, is what stands out.
    """

    def tail(self, x: Observation) -> float:
        """``P(N ≥ n)`` under the agent's usual count distribution; 1 without history."""
        usual = self._usual(x)
        n = self._value(x)
        if usual is None or n <= 1:
            return 1.0
        mean, var = max(usual[0], 1e-3), usual[1]
        if var > mean * 1.01:  # negative binomial with r = mean² / (var - mean)
            r = mean * mean / (var - mean)
            q = mean / (r + mean)
            term = below = math.exp(r * math.log1p(-q))
            for k in range(1, min(n, 500)):
                term *= (k - 1 + r) / k * q
                below += term
        else:
            term = below = math.exp(-mean)
            for k in range(1, min(n, 500)):
                term *= mean / k
                below += term
        return min(1.0, max(1.0 - below, 1e-12))

    def score_one(self, x: Observation) -> float:
        return min(1.0, -math.log10(self.tail(x)) / self.config.count_decades)

    def learn_one(self, x: Observation) -> None:
        self._stats.learn_one(x, self._key(x), float(self._value(x)))

    def explain(self, x: Observation) -> str:
        usual = self._usual(x)
        return self._describe(x, usual[0] if usual else 0.0, self.tail(x))


class Habit(_KeyedQuantity):
    """A behaviour that is suspicious unless this agent habitually shows it.

    ``value(x)`` in [0, 1] is how much a call shows the behaviour (None: not
    applicable); the score is that value times how surprising the behaviour
    is given how often the agent's learned calls of the same kind (``key``)
    showed it (``ln(1/(usual + floor)) / ln(1/floor)``: 1 when never, about
    0.26 when in 30% of calls), backing off to role and fleet. So an agent
    whose terse intents never mention the deletes it always does is not
    flagged for doing its job.
    """

    def usual(self, x: Observation) -> float:
        """How much this agent's learned calls of this kind showed the behaviour."""
        usual = self._usual(x)
        return min(1.0, max(0.0, usual[0])) if usual else 0.0

    def score_one(self, x: Observation) -> float:
        value = self._value(x)
        if not value:
            return 0.0
        floor = self.config.habit_floor
        surprise = math.log(1.0 / (self.usual(x) + floor)) / math.log(1.0 / floor)
        return float(value * min(1.0, surprise))

    def learn_one(self, x: Observation) -> None:
        value = self._value(x)
        if value is not None:
            self._stats.learn_one(x, self._key(x), value)

    def explain(self, x: Observation) -> str:
        return self._describe(x, self.usual(x))

