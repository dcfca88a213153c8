"""What the detectors learned, as versioned, typed data: msgpack of msgspec structs.

Three kinds of record, each under one header (:class:`Sealed`: format, version, kind and
the digest of the settings it was learned under): an agent's own state
(:class:`AgentState`: its baselines, destinations and habits), a population's
(:class:`Population`: roles, fleet and the shared model) and everything at once
(:class:`Learned`, the file ``intentwatch learn`` writes). Statistics are flat arrays
(values and weights side by side), so a record encodes and decodes in microseconds.
Loading makes only these structs (no code is run, no class is named by the data), and
:func:`open_sealed` refuses another format, version, kind or settings with one sentence.

>>> state = AgentState(agent="spiffe://a/r/a1", rarity={}, keyed={})
>>> data = seal(state, settings="s1")
>>> open_sealed(data, AgentState, settings="s1").agent
'spiffe://a/r/a1'
>>> open_sealed(data, AgentState, settings="s2")
Traceback (most recent call last):
...
intentwatch.models.learned.LearnedStateError: learned state was learned with other \
baseline, shared-model or provenance settings (s1, here s2)
>>> open_sealed(b"\\x80\\x05 some other bytes", Learned, settings="s1")
Traceback (most recent call last):
...
intentwatch.models.learned.LearnedStateError: not intentwatch learned state (it has no \
learned-state header)
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

__all__ = [
    "FORMAT",
    "VERSION",
    "AgentState",
    "Baselines",
    "Counts",
    "KeyedLevels",
    "KeyedScope",
    "Learned",
    "LearnedStateError",
    "Population",
    "RarityLevels",
    "RarityScope",
    "Sealed",
    "Shared",
    "Stats",
    "Tasks",
    "open_sealed",
    "seal",
]

FORMAT = "intentwatch.learned"
VERSION = 1
"""Bumped whenever what a reader of this version would make of the data changes."""

Value = str | tuple[str, str] | None
"""A learned categorical value: a tool, target or site, a (context, value) pair, or none."""


class LearnedStateError(ValueError):
    """Learned state that cannot be used here; the message is one sentence saying why."""


class Stats(msgspec.Struct, array_like=True):
    """:class:`~intentwatch.models.statistics.EWStats`."""

    mean: float
    var: float
    n: int


class Counts(msgspec.Struct, array_like=True):
    """:class:`~intentwatch.models.statistics.DecayingCounts`: values and their weights."""

    values: list[Value]
    weights: list[float]
    inc: float
    total: float
    novel: float


class RarityScope(msgspec.Struct, array_like=True):
    """What a rarity detector keeps for one agent, role or the fleet."""

    counts: Counts
    contexts: Counts | None
    surprisal: Stats


class KeyedScope(msgspec.Struct, array_like=True):
    """Running statistics per key (e.g. per tool) of one agent, role or the fleet."""

    keys: list[Value]
    stats: list[Stats]


class Tasks(msgspec.Struct, array_like=True):
    """One scope of :class:`~intentwatch.models.provenance.Established`: its clean tasks
    and, per key, the decayed count of tasks that used it and when it was last counted."""

    tasks: int
    keys: list[str]
    counts: list[float]
    at: list[int]


class RarityLevels(msgspec.Struct, array_like=True):
    """A rarity detector's roles and fleet, and how many values it learned."""

    roles: dict[str, RarityScope]
    fleet: RarityScope
    learned: int


class KeyedLevels(msgspec.Struct, array_like=True):
    """A keyed-statistics detector's roles and fleet."""

    roles: dict[str, KeyedScope]
    fleet: KeyedScope


class Shared(msgspec.Struct, array_like=True):
    """:class:`~intentwatch.models.multivariate.SharedAnomalyModel`: the trees' masses
    (left, right per node; their shape follows from the seed and the features), the
    window position and the calibration window."""

    learned: int
    recent: list[float]
    counter: int
    first_window: bool
    masses: list[list[int]]


class AgentState(msgspec.Struct, kw_only=True):
    """What was learned of one agent alone: it moves with the agent's partition."""

    agent: str
    rarity: dict[str, RarityScope]
    """Detector name -> the agent's scope (only detectors that learned something of it)."""
    keyed: dict[str, KeyedScope]
    destinations: Tasks | None = None
    habits: Tasks | None = None


class Baselines(msgspec.Struct, kw_only=True):
    """What the baselines learned of roles and the fleet, by detector name."""

    rarity: dict[str, RarityLevels]
    keyed: dict[str, KeyedLevels]
    novelty: dict[str, Counts]
    """Fleet-wide novelty detectors' counts."""


class Population(msgspec.Struct, kw_only=True):
    """What was learned of roles and the fleet: everything but the agents' own state."""

    baselines: Baselines
    destinations: dict[str, Tasks]
    """Role -> its established destinations."""
    habits: dict[str, Tasks]
    shared: Shared
    calls: int
    """Calls learned in all (the agents' included)."""


class Learned(msgspec.Struct, kw_only=True):
    """Everything a detector learned: the population and every agent's state."""

    population: Population
    agents: list[AgentState]


class Sealed(msgspec.Struct, kw_only=True):
    """The header every learned-state record has; ``data`` is the record itself."""

    format: str
    version: int
    kind: str
    settings: str
    """Digest of the settings the state was learned under."""
    data: msgspec.Raw


_KINDS: dict[type, str] = {AgentState: "agent", Population: "population", Learned: "learned"}
_WHAT = {"agent": "one agent's", "population": "a population's", "learned": "a whole detector's"}
_ENCODER = msgspec.msgpack.Encoder()
_HEADER = msgspec.msgpack.Decoder(Sealed)
_DECODERS: dict[type, msgspec.msgpack.Decoder[AgentState | Population | Learned]] = {
    kind: msgspec.msgpack.Decoder(kind) for kind in _KINDS}

T = TypeVar("T", AgentState, Population, Learned)


def seal(state: AgentState | Population | Learned, *, settings: str) -> bytes:
    """``state`` as bytes, under the header naming its kind and ``settings``."""
    return _ENCODER.encode(Sealed(
        format=FORMAT, version=VERSION, kind=_KINDS[type(state)], settings=settings,
        data=msgspec.Raw(_ENCODER.encode(state)),
    ))


def open_sealed(data: bytes, kind: type[T], *, settings: str) -> T:
    """The ``kind`` of state :func:`seal` wrote; :class:`LearnedStateError` for anything
    else: other bytes, another version, kind or settings, or a damaged record."""
    try:
        sealed = _HEADER.decode(data)
    except msgspec.DecodeError:
        raise LearnedStateError(
            "not intentwatch learned state (it has no learned-state header)") from None
    if sealed.format != FORMAT:
        raise LearnedStateError(f"not intentwatch learned state (format {sealed.format!r})")
    if sealed.version != VERSION:
        raise LearnedStateError(
            f"learned state of version {sealed.version}; this intentwatch reads version "
            f"{VERSION} only (learn it again with this version)")
    if sealed.kind != _KINDS[kind]:
        raise LearnedStateError(
            f"learned state of {_WHAT.get(sealed.kind, repr(sealed.kind))} kind, not "
            f"{_WHAT[_KINDS[kind]]}")
    if sealed.settings != settings:
        raise LearnedStateError(
            "learned state was learned with other baseline, shared-model or provenance "
            f"settings ({sealed.settings}, here {settings})")
    try:
        state = _DECODERS[kind].decode(sealed.data)
    except msgspec.DecodeError as error:
        raise LearnedStateError(f"damaged learned state ({error})") from None
    assert isinstance(state, kind)
    return state
