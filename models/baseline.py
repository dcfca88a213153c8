"""Per-agent behaviour baselines: online, decaying, bounded, backing off to role and fleet.

Each detector follows river's shape: ``score_one(x)`` judges one
:class:`Observation` against what was learned, ``learn_one(x)`` learns it
(only for calls of tasks that ended without revocation), and ``explain(x)``
says in a sentence why the score is what it is.

Every statistic is kept at three levels: the agent, its role (SPIFFE ID
minus the last segment) and the fleet. A level with little evidence defers to
the one above it, so a brand-new agent is judged by its peers. Counts decay
exponentially per learned call, and every table has a cap on tracked values
(the least-weighted values are evicted), so memory per agent is bounded.

>>> from intentwatch.models.catalogue import ToolInfo
>>> from intentwatch.contracts import ToolCall
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
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from intentwatch.contracts import LABEL_LEVELS, ToolCall, role_of
from intentwatch.models.catalogue import ToolInfo
from intentwatch.models.config import settings_from
from intentwatch.models.intent import (
    TargetParts,
    admin_interface,
    ordered_concepts,
    parse_target,
    parties_of,
    privilege_of,
)
from intentwatch.models.learned import (
    AgentState,
    Baselines,
    Counts,
    KeyedLevels,
    KeyedScope,
    RarityLevels,
    RarityScope,
    Stats,
)

__all__ = [
    "FLEET",
    "SENSITIVE_LABELS",
    "Baseline",
    "BaselineConfig",
    "Count",
    "DecayingCounts",
    "EWStats",
    "FleetNovelty",
    "Habit",
    "KeyedStats",
    "Observation",
    "Rarity",
    "TaskContext",
    "Volume",
    "touches_secrets",
]

FLEET = "*"
SENSITIVE_LABELS: tuple[str, ...] = (
    "restricted", "secret", "credentials", "confidential", "financial", "pci", "phi", "pii",
)
"""Data labels that make a read a sensitive source, most sensitive first."""
_SENSITIVITY = {label: rank for rank, label in enumerate(SENSITIVE_LABELS)}
EXTERNAL_SCHEMES = frozenset({"", "mailto", "http", "https", "ftp", "sftp", "ws", "wss", "iban"})
"""Target schemes that can leave the organisation (others name internal resources)."""
_LEVEL_RANK = {level: rank for rank, level in enumerate(LABEL_LEVELS)}
_SECRET_WORDS = re.compile(
    r"secret|credential|passw(or)?d|api[-_]?keys?\b|api[-_]?tokens?|access[-_]?keys?|"
    r"private[-_]?keys?|id_rsa|kubeconfig|/\.env\b|\btokens?\b"
)


def _describe_flow(x: Observation) -> str:
    sink, label = x.carried or ("a sink", "sensitive")
    target = f" to {x.target}" if x.target else ""
    return f"{sink} ({x.tool}{target}) after reading {label} data in this task:"


@lru_cache(maxsize=65536)
def touches_secrets(tool: str, endpoint: str | None) -> bool:
    """Whether a call reads or writes secrets, judged from its tool name and target.

    >>> touches_secrets("vault.read_secret", None), touches_secrets("crm.get_lead", None)
    (True, False)
    >>> touches_secrets("http.fetch", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    True
    """
    return bool(_SECRET_WORDS.search(tool.lower()) or (endpoint and _SECRET_WORDS.search(endpoint)))


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


# -- observations --------------------------------------------------------------------------


@dataclass(slots=True)
class Observation:
    """One tool call as the baselines see it: the call plus its place in the task."""

    agent_id: str
    role: str
    tool: str
    action: str
    target: str | None
    endpoint: str | None
    """The target with record identifiers replaced (``…/tickets/{id}``)."""
    site: str | None
    """Where the target points: its host, mail domain, channel or account."""
    domain: str | None
    """Registrable domain of the target (``iban:CC`` for accounts)."""
    external: bool
    prev_tool: str
    repeats: int
    """Calls of this tool in the task so far, this one included."""
    target_repeats: int
    """Calls of this tool on this very target in the task so far, this one included."""
    bytes_out: float | None
    bytes_in: float | None
    task_bytes_out: float
    """Bytes sent through this tool in the task so far, this call included."""
    rate: float
    """Calls of this task in about the last minute (exponentially weighted)."""
    sensitive: tuple[str, ...]
    """Sensitive labels read earlier in the task or carried by this call."""
    label_level: float
    """This call's highest classification level in [0, 1]."""
    growth: float | None = None
    """For a call that writes or sends through a tool already used so in the task: how far
    its payload grew over a run of ever larger ones, ``ln(bytes_out / run start)`` (half
    for a run of two calls); 0 when it did not grow."""
    parties: tuple[str, ...] = ()
    """For a send or admin call: outside parties its arguments name besides the target
    (a ``cc``, the login of an account it creates, where a reset link goes)."""
    privilege: str | None = None
    """The administrative privilege level an admin call's target or arguments name, or the
    administrative interface (``/api/admin/…``) another call over HTTP reaches."""
    kind: str | None = None
    """The kind of task, the verb its intent opens with (``refund``, ``triage``); None
    without an intent."""
    unasked: float | None = None
    """How far the intent does not ask for this action, 1 - credit (set by the detector)."""
    memo: dict[str, Any] = field(default_factory=dict)
    """What scoring computed that learning can reuse (e.g. surprisals), by detector name."""

    @property
    def sink(self) -> str | None:
        """Where data can leave through this call: an external send, or code execution."""
        if self.action == "send" and self.external:
            return "external send"
        return "code execution" if self.action == "execute" else None

    @property
    def carried(self) -> tuple[str, str] | None:
        """For a sink: (sink, the most sensitive data read so far in the task, or ``none``)."""
        sink = self.sink
        if sink is None:
            return None
        top = min(self.sensitive, key=_SENSITIVITY.__getitem__) if self.sensitive else "none"
        return sink, top


def task_kind(intent: str | None) -> str | None:
    """The kind of a task: the first word of its intent that orders an action (not
    "please", "hey" or a noun).

    >>> task_kind("Refund EUR 25.48 for order ORD-1"), task_kind("Hey, please triage the inbox")
    ('refund', 'triage')
    >>> task_kind("What is in my inbox?") is None
    True
    """
    if not intent:
        return None
    asked = ordered_concepts(intent)
    return asked[0][0] if asked else None


class TaskContext:
    """What a task has done so far: previous tool, sensitive reads, rate, bytes sent.

    ``observe`` turns each call, in order, into an :class:`Observation`; the
    same sequence is rebuilt when the task is learned.
    """

    __slots__ = (
        "_bytes",
        "_growing",
        "_internal",
        "_last_ts",
        "_rate",
        "_sensitive",
        "_targets",
        "_tools",
        "_window",
        "agent_id",
        "kind",
        "prev_tool",
        "role",
    )

    START = "^"
    """The previous tool of a task's first call."""

    def __init__(
        self,
        agent_id: str,
        internal_domains: Iterable[str] = (),
        rate_window: float = 60.0,
        intent: str | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.kind = task_kind(intent)
        self.role = role_of(agent_id)
        trust_domain = agent_id.split("/", 3)[2]
        self._internal = frozenset((parse_target(trust_domain).domain or trust_domain,
                                    *internal_domains))
        self._window = rate_window
        self.prev_tool = self.START
        self._last_ts: float | None = None
        self._rate = 0.0
        self._bytes: dict[str, float] = {}
        self._growing: dict[str, tuple[float, float, int]] = {}
        """tool -> (first, last, length) of the run of ever larger payloads through it."""
        self._sensitive: dict[str, None] = {}
        self._tools: dict[str, int] = {}
        self._targets: dict[tuple[str, str | None], int] = {}

    def observe(self, call: ToolCall, tool: ToolInfo) -> Observation:
        """The observation of ``call``; advances the task's state past it."""
        endpoint = site = domain = None
        external = False
        if call.target:
            parts = parse_target(call.target)
            endpoint, site, domain = parts.endpoint, parts.site, parts.domain
            external = self._outside(parts)
        repeats = self._tools[call.tool] = self._tools.get(call.tool, 0) + 1
        same = (call.tool, call.target)
        target_repeats = self._targets[same] = self._targets.get(same, 0) + 1
        ts = call.ts
        if self._last_ts is None:
            self._rate = 1.0
        else:
            self._rate = self._rate * math.exp(-max(ts - self._last_ts, 0.0) / self._window) + 1.0
        self._last_ts = ts
        growth = None
        if call.bytes_out:
            self._bytes[call.tool] = self._bytes.get(call.tool, 0.0) + call.bytes_out
            if tool.action != "read":
                run = self._growing.get(call.tool)
                if run is not None and call.bytes_out > run[1]:
                    start, _, length = run
                    self._growing[call.tool] = (start, call.bytes_out, length + 1)
                    # a payload that keeps growing call after call; two steps count fully
                    growth = math.log(call.bytes_out / start) * min(1.0, length / 2)
                else:
                    self._growing[call.tool] = (call.bytes_out, call.bytes_out, 1)
                    growth = None if run is None else 0.0
        parties: tuple[str, ...] = ()
        privilege = None
        if tool.action in ("send", "admin") and call.args:
            parties = tuple(
                p for p in parties_of(call.args)
                if p != (call.target or "").lower() and self._outside(parse_target(p))
            )
        if tool.action == "admin":
            privilege = privilege_of(call.target, call.args)
        elif endpoint and endpoint.startswith(("https://", "http://")):
            privilege = admin_interface(endpoint)  # e.g. a generic HTTP client on /api/admin
        level = 0.0
        if touches_secrets(call.tool, endpoint):
            self._sensitive["credentials"] = None
            level = 1.0  # credentials are the most sensitive data there is
        for label in call.data_labels:
            lowered = label.lower()
            if lowered in _SENSITIVITY:
                self._sensitive[lowered] = None
            rank = _LEVEL_RANK.get(lowered)
            if rank is not None:
                level = max(level, rank / (len(LABEL_LEVELS) - 1))
            elif lowered in _SENSITIVITY:  # tags: secrets as restricted, the rest as confidential
                level = max(level, 1.0 if _SENSITIVITY[lowered] < 3 else 2 / 3)
        x = Observation(
            agent_id=self.agent_id,
            role=self.role,
            tool=call.tool,
            action=tool.action,
            target=call.target,
            endpoint=endpoint,
            site=site,
            domain=domain,
            external=external,
            prev_tool=self.prev_tool,
            repeats=repeats,
            target_repeats=target_repeats,
            bytes_out=call.bytes_out,
            bytes_in=call.bytes_in,
            task_bytes_out=self._bytes.get(call.tool, 0.0),
            rate=self._rate,
            sensitive=tuple(self._sensitive),
            label_level=level,
            growth=growth,
            parties=parties,
            privilege=privilege,
            kind=self.kind,
        )
        self.prev_tool = call.tool
        return x

    @property
    def internal(self) -> frozenset[str]:
        """The registrable domains inside the organisation (the trust domain's, configured)."""
        return self._internal

    def _outside(self, parts: TargetParts) -> bool:
        """Whether a target points outside the organisation."""
        return (
            parts.scheme in EXTERNAL_SCHEMES and parts.domain is not None
            and parts.domain not in self._internal
        )


# -- building blocks -----------------------------------------------------------------------


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


def _ramp(z: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return min(1.0, max(0.0, (z - low) / (high - low)))


def _bytes(n: float) -> str:
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} GB"


_USUAL_CACHE_SIZE = 65536
"""Blended statistics cached between learns (per detector), cleared when this many."""


class _Levels:
    """One value per scope (agent, role, fleet) made on demand, with a growing cap per level."""

    __slots__ = ("_factory", "agents", "fleet", "roles")

    def __init__(self, factory: Callable[[int], Any]) -> None:
        self._factory = factory
        self.agents: dict[str, Any] = {}
        self.roles: dict[str, Any] = {}
        self.fleet = factory(2)

    def get(self, x: Observation) -> tuple[Any, Any, Any]:
        return self.agents.get(x.agent_id), self.roles.get(x.role), self.fleet

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


# -- detectors -----------------------------------------------------------------------------


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

        self._levels = _Levels(scope)
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
        """``-ln P(value)``, remembered on ``x`` so learning reuses what scoring saw."""
        known = x.memo.get(self.name)
        if known is None:
            p = self._probability(x, scopes or self._levels.get(x), value)
            known = x.memo[self.name] = -math.log(max(p, 1e-300))
        return known

    def score_one(self, x: Observation) -> float:
        value = self._value(x)
        if value is None or (self._quiet is not None and self._quiet(value)):
            return 0.0
        return _ramp(self._z(x, value), self._rarity_z)

    def _z(self, x: Observation, value: Hashable | None = None) -> float:
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
        return (self.surprisal(x, scopes, value) - mean) / spread

    def learn_one(self, x: Observation) -> None:
        value = self._value(x)
        if value is None:
            return
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

    def agent_state(self, agent_id: str) -> RarityScope | None:
        """What was learned of ``agent_id`` alone, as data (None: nothing)."""
        scope = self._levels.agents.get(agent_id)
        return scope.to_data() if scope is not None else None

    def load_agent_state(self, agent_id: str, data: RarityScope) -> None:
        self._levels.agents[agent_id] = self._levels.make(0).load(data)
        self._usual.clear()

    def population_state(self) -> RarityLevels:
        """What was learned of roles and the fleet, as data."""
        levels = self._levels
        return RarityLevels({role: s.to_data() for role, s in levels.roles.items()},
                            levels.fleet.to_data(), self._learned)

    def load_population_state(self, data: RarityLevels) -> None:
        levels = self._levels
        levels.roles = {role: levels.make(1).load(s) for role, s in data.roles.items()}
        levels.fleet = levels.make(2).load(data.fleet)
        self._learned = data.learned
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

    def population_state(self) -> Counts:
        return self._counts.to_data()

    def load_population_state(self, data: Counts) -> None:
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
        self._levels: _Levels = _Levels(lambda level: {})
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

    def agent_state(self, agent_id: str) -> KeyedScope | None:
        """What was learned of ``agent_id`` alone, as data (None: nothing)."""
        per_key = self._levels.agents.get(agent_id)
        return _keyed_data(per_key) if per_key is not None else None

    def load_agent_state(self, agent_id: str, data: KeyedScope) -> None:
        self._levels.agents[agent_id] = _keyed_stats(data)

    def population_state(self) -> KeyedLevels:
        levels = self._levels
        return KeyedLevels({role: _keyed_data(s) for role, s in levels.roles.items()},
                           _keyed_data(levels.fleet))

    def load_population_state(self, data: KeyedLevels) -> None:
        self._levels.roles = {role: _keyed_stats(s) for role, s in data.roles.items()}
        self._levels.fleet = _keyed_stats(data.fleet)


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

    def agent_state(self, agent_id: str) -> KeyedScope | None:
        return self._stats.agent_state(agent_id)

    def load_agent_state(self, agent_id: str, data: KeyedScope) -> None:
        self._stats.load_agent_state(agent_id, data)

    def population_state(self) -> KeyedLevels:
        return self._stats.population_state()

    def load_population_state(self, data: KeyedLevels) -> None:
        self._stats.load_population_state(data)


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
        return _ramp(self.z(x), self._bounds)

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


# -- the baseline --------------------------------------------------------------------------


def _bytes_sentence(what: str) -> Callable[[Observation, float, float], str]:
    def describe(x: Observation, typical: float, z: float) -> str:
        value = getattr(x, what)
        return (
            f"{what} {_bytes(value)} on {x.tool} is {z:.1f} σ above this agent's usual "
            f"(about {_bytes(typical)})"
        )

    return describe


@dataclass
class Baseline:
    """All per-agent detectors, scored and learned together.

    ``score_one`` returns one value in [0, 1] per detector name; ``explain``
    gives the sentence for one of them.
    """

    config: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        c = self.config
        self.detectors: dict[str, Any] = {
            "tool_rarity": Rarity("tool", lambda x: x.tool, c, max_values=c.max_tools),
            "target_rarity": Rarity(
                "target", lambda x: x.endpoint, c, max_values=c.max_targets,
                describe=lambda x: f"target {x.endpoint}",
            ),
            "internal_site_rarity": Rarity(
                "internal destination", lambda x: None if x.external else x.site, c,
                max_values=c.max_sites,
            ),
            "external_site_rarity": Rarity(
                "external destination", lambda x: x.site if x.external else None, c,
                max_values=c.max_sites,
            ),
            "transition_rarity": Rarity(
                "transition", lambda x: (x.prev_tool, x.tool), c,
                max_values=c.max_transitions, context=lambda x: x.prev_tool,
                describe=lambda x: "transition " + (
                    "task start" if x.prev_tool == TaskContext.START else x.prev_tool
                ) + f" → {x.tool}",
            ),
            "kind_tool_rarity": Rarity(
                "tool in this kind of task", lambda x: None if x.kind is None else (x.kind, x.tool),
                c, max_values=c.max_transitions, context=lambda x: x.kind,
                describe=lambda x: f"{x.tool} in a '{x.kind}' task",
            ),
            "domain_novelty": FleetNovelty("domain", lambda x: x.domain, c),
            "bytes_out": Volume(
                "bytes_out", lambda x: x.bytes_out, c, key=lambda x: x.tool,
                describe=_bytes_sentence("bytes_out"),
            ),
            "bytes_in": Volume(
                "bytes_in", lambda x: x.bytes_in, c, key=lambda x: x.tool,
                describe=_bytes_sentence("bytes_in"),
            ),
            "task_bytes_out": Volume(
                "task_bytes_out",
                lambda x: x.task_bytes_out if x.task_bytes_out and x.action != "read" else None,
                c, key=lambda x: x.tool,
                describe=lambda x, typical, z: (
                    f"this task has sent {_bytes(x.task_bytes_out)} through {x.tool} so far, "
                    f"{z:.1f} σ above this agent's usual (about {_bytes(typical)})"
                ),
            ),
            "tool_repeats": Count(
                "tool_repeats", lambda x: x.repeats, c, key=lambda x: x.tool,
                describe=lambda x, usual, tail: (
                    f"call {x.repeats} of {x.tool} in this task; this agent's tasks average "
                    f"{usual:.1f} (chance of this many: {tail:.1g})"
                ),
            ),
            "target_repeats": Count(
                "target_repeats", lambda x: x.target_repeats, c, key=lambda x: x.tool,
                describe=lambda x, usual, tail: (
                    f"call {x.target_repeats} of {x.tool} on {x.target or 'the same target'} in "
                    f"this task; this agent's tasks average {usual:.1f} (chance of this many: "
                    f"{tail:.1g})"
                ),
            ),
            "rate": Volume(
                "rate", lambda x: x.rate, c,
                describe=lambda x, typical, z: (
                    f"{x.rate:,.0f} calls in about the last minute of this task, "
                    f"{z:.1f} σ above this agent's usual (about {typical:,.0f})"
                ),
            ),
            "flow": Rarity(
                "flow", lambda x: x.carried, c, max_values=2 * len(SENSITIVE_LABELS) + 2,
                quiet=lambda value: value[1] == "none",
                describe=_describe_flow,
            ),
            "payload_growth": Habit(
                "payload_growth",
                lambda x: None if x.growth is None else _ramp(x.growth, c.growth_ln),
                c, key=lambda x: x.tool,
                describe=lambda x, usual: (
                    f"this task's payloads through {x.tool} grew {math.exp(x.growth or 0):.1f}×"
                    f" (to {_bytes(x.bytes_out or 0)}); this agent's repeated {x.tool} calls "
                    f"grow like this {usual:.0%} of the time"
                ),
            ),
            "unasked": Habit(
                "unasked", lambda x: x.unasked, c, key=lambda x: x.tool,
                describe=lambda x, usual: (
                    f"this agent uses {x.tool} unasked in {usual:.0%} of its calls of it"
                    if usual >= 0.005 else ""
                ),
            ),
        }

        self._scorers = [(name, d.score_one) for name, d in self.detectors.items()]
        self._learners = [d.learn_one for d in self.detectors.values()]

    def score_one(self, x: Observation) -> dict[str, float]:
        return {name: score_one(x) for name, score_one in self._scorers}

    def learn_one(self, x: Observation) -> None:
        for learn_one in self._learners:
            learn_one(x)

    def explain(self, name: str, x: Observation) -> str:
        explanation: str = self.detectors[name].explain(x)
        return explanation

    def history(self, agent_id: str, role: str) -> tuple[float, float, float]:
        """Decayed number of calls learned from the agent, its role and the fleet (every
        call has a tool, so the tool counts are the baselines' evidence).

        >>> Baseline().history("spiffe://acme.org/support/a1", "spiffe://acme.org/support")
        (0.0, 0.0, 0.0)
        """
        learned: tuple[float, float, float] = self.detectors["tool_rarity"].learned(agent_id, role)
        return learned

    def census(self) -> tuple[int, dict[str, float], float]:
        """Agents learned, each role's decayed number of learned calls, and the fleet's."""
        tools = self.detectors["tool_rarity"]
        agents, roles = tools.census()
        return agents, roles, tools.learned("", "")[2]

    # -- what was learned, as data (:mod:`~intentwatch.models.learned`) ----------------------

    def agent_state(self, agent_id: str) -> AgentState:
        """What the detectors learned of ``agent_id`` alone: it moves with the agent,
        apart from its role's and the fleet's."""
        rarity: dict[str, RarityScope] = {}
        keyed: dict[str, KeyedScope] = {}
        for name, detector in self.detectors.items():
            if isinstance(detector, FleetNovelty):
                continue
            scope = detector.agent_state(agent_id)
            if scope is not None:
                if isinstance(detector, Rarity):
                    rarity[name] = scope
                else:
                    keyed[name] = scope
        return AgentState(agent=agent_id, rarity=rarity, keyed=keyed)

    def load_agent_state(self, data: AgentState) -> None:
        """Take over what :meth:`agent_state` gave (another baseline's of the same config)."""
        for name, scope in (*data.rarity.items(), *data.keyed.items()):
            self.detectors[name].load_agent_state(data.agent, scope)

    def population_state(self) -> Baselines:
        """What the detectors learned of roles and the fleet."""
        state = Baselines(rarity={}, keyed={}, novelty={})
        for name, detector in self.detectors.items():
            kind = (state.novelty if isinstance(detector, FleetNovelty)
                    else state.rarity if isinstance(detector, Rarity) else state.keyed)
            kind[name] = detector.population_state()
        return state

    def load_population_state(self, data: Baselines) -> None:
        """Take over what :meth:`population_state` gave (of the same config)."""
        for name, levels in (*data.rarity.items(), *data.keyed.items(), *data.novelty.items()):
            self.detectors[name].load_population_state(levels)

    def task(self, agent_id: str, intent: str | None = None) -> TaskContext:
        """A fresh context for a new task of ``agent_id`` (approved for ``intent``)."""
        return TaskContext(
            agent_id, self.config.internal_domains, self.config.rate_window_seconds, intent
        )
