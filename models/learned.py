"""What the detectors learned, as versioned, typed data: msgpack of msgspec structs.

Four kinds of record, each under one header (:class:`Sealed`: format, version, kind and
the digest of the settings it was learned under): an agent's own state
(:class:`AgentState`: its baselines, destinations and habits), a role's
(:class:`RoleState`, the same of one role), a population's (:class:`Population`: the
fleet, the shared model and the roles it has a :class:`RoleState` of) and everything at
once (:class:`Learned`, the file ``intentwatch learn`` writes). Statistics are flat arrays
(values and weights side by side), so a record encodes and decodes in microseconds.
Loading makes only these structs (no code is run, no class is named by the data), and
:func:`open_sealed` refuses another format, version, kind or settings with one sentence.

Each role and each agent is a record of its own, so a record grows with what one scope
learned (bounded by the baselines' caps), not with the number of roles or agents; and
:class:`PartedStore` keeps any record longer than :data:`PART_BYTES` in parts, so none
comes near the broker's 1 MB message limit whatever the values learned.

>>> state = AgentState(id="spiffe://a/r/a1", rarity={}, keyed={})
>>> data = seal(state, settings="s1")
>>> open_sealed(data, AgentState, settings="s1").id
'spiffe://a/r/a1'
>>> open_sealed(data, AgentState, settings="s2")
Traceback (most recent call last):
...
intentwatch.models.learned.LearnedStateError: learned state was learned with other \
baseline, shared-model or provenance settings (s1, here s2)
>>> open_sealed(data, RoleState, settings="s1")
Traceback (most recent call last):
...
intentwatch.models.learned.LearnedStateError: learned state of one agent's kind, not one \
role's
>>> open_sealed(b"\\x80\\x05 some other bytes", Learned, settings="s1")
Traceback (most recent call last):
...
intentwatch.models.learned.LearnedStateError: not intentwatch learned state (it has no \
learned-state header)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping
from typing import TypeVar

import msgspec

__all__ = [
    "FORMAT",
    "PART_BYTES",
    "VERSION",
    "AgentState",
    "Baselines",
    "Counts",
    "KeyedScope",
    "Learned",
    "LearnedStateError",
    "PartedStore",
    "Population",
    "RarityScope",
    "RoleState",
    "Scope",
    "Sealed",
    "Shared",
    "Stats",
    "Tasks",
    "open_sealed",
    "seal",
]

FORMAT = "intentwatch.learned"
VERSION = 2
"""Bumped whenever what a reader of this version would make of the data changes."""

PART_BYTES = 256 * 1024
"""The most bytes :class:`PartedStore` keeps in one record (a quarter of the broker's
1 MB message limit)."""

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


class Shared(msgspec.Struct, array_like=True):
    """:class:`~intentwatch.models.multivariate.SharedAnomalyModel`: the trees' masses
    (left, right per node; their shape follows from the seed and the features), the
    window position and the calibration window."""

    learned: int
    recent: list[float]
    counter: int
    first_window: bool
    masses: list[list[int]]


class Scope(msgspec.Struct, kw_only=True):
    """What was learned of one agent or one role alone."""

    id: str
    """The agent's SPIFFE ID, or the role's (its agents' path)."""
    rarity: dict[str, RarityScope]
    """Detector name -> the scope's (only detectors that learned something of it)."""
    keyed: dict[str, KeyedScope]
    destinations: Tasks | None = None
    habits: Tasks | None = None


class AgentState(Scope, kw_only=True):
    """What was learned of one agent alone: it moves with the agent's partition."""


class RoleState(Scope, kw_only=True):
    """What was learned of one role (a partition's share of it), apart from its agents'."""


class Baselines(msgspec.Struct, kw_only=True):
    """What the baselines learned of the fleet, by detector name."""

    rarity: dict[str, RarityScope]
    keyed: dict[str, KeyedScope]
    novelty: dict[str, Counts]
    """Fleet-wide novelty detectors' counts."""


class Population(msgspec.Struct, kw_only=True):
    """What was learned of the fleet and by the shared model, and which roles have a
    :class:`RoleState` beside it."""

    baselines: Baselines
    shared: Shared
    calls: int
    """Calls learned in all (the agents' included)."""
    roles: list[str]


class Learned(msgspec.Struct, kw_only=True):
    """Everything a detector learned: the population, every role's and every agent's state."""

    population: Population
    roles: list[RoleState]
    agents: list[AgentState]


class Sealed(msgspec.Struct, kw_only=True):
    """The header every learned-state record has; ``data`` is the record itself."""

    format: str
    version: int
    kind: str
    settings: str
    """Digest of the settings the state was learned under."""
    data: msgspec.Raw


_KINDS: dict[type, str] = {AgentState: "agent", RoleState: "role", Population: "population",
                           Learned: "learned"}
_WHAT = {"agent": "one agent's", "role": "one role's", "population": "a population's",
         "learned": "a whole detector's"}
_ENCODER = msgspec.msgpack.Encoder()
_HEADER = msgspec.msgpack.Decoder(Sealed)
_DECODERS: dict[type, msgspec.msgpack.Decoder[AgentState | RoleState | Population | Learned]] = {
    kind: msgspec.msgpack.Decoder(kind) for kind in _KINDS}

T = TypeVar("T", AgentState, RoleState, Population, Learned)


def seal(state: AgentState | RoleState | Population | Learned, *, settings: str) -> bytes:
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


# -- records of a bounded size ----------------------------------------------------------------


class _Parts(msgspec.Struct, array_like=True, tag="parts"):
    """What :class:`PartedStore` keeps under the key of a long value: how many parts hold
    it, its length and its SHA-256 (a :class:`Sealed` record is a map, never this array)."""

    count: int
    size: int
    sha256: str


_PARTS = msgspec.msgpack.Decoder(_Parts)
_PART = "#part"
"""Between a key and a part's number: in no agent's or role's key (a SPIFFE ID has no ``#``)."""


class PartedStore(MutableMapping[str, bytes]):
    """``table`` (e.g. the worker's ``learned`` table) in records of at most ``part_bytes``:
    a longer value is kept in parts under ``key#part0``, ``key#part1``..., and ``key``
    says how many, so no record comes near the broker's message limit. A value whose
    parts do not add up (a crash between writing them) is :class:`LearnedStateError`.

    >>> table = {}
    >>> store = PartedStore(table, part_bytes=4)
    >>> store["a"], store["b"] = b"0123456789", b"ab"
    >>> sorted(table), store["a"], sorted(store)
    (['a', 'a#part0', 'a#part1', 'a#part2', 'b'], b'0123456789', ['a', 'b'])
    >>> table["a#part1"] = b"4x67"  # as if a crash came between writing the parts
    >>> store["a"]
    Traceback (most recent call last):
    ...
    intentwatch.models.learned.LearnedStateError: incomplete learned state under 'a' (its \
parts do not add up to the value they were written as)
    >>> store["a"] = b"xy"
    >>> sorted(table), store["a"]
    (['a', 'b'], b'xy')
    """

    def __init__(self, table: MutableMapping[str, bytes], part_bytes: int = PART_BYTES) -> None:
        self.table = table
        self.part_bytes = part_bytes

    def __getitem__(self, key: str) -> bytes:
        value = self.table[key]
        parts = _parts(value)
        if parts is None:
            return value
        whole = b"".join(self.table.get(f"{key}{_PART}{n}", b"") for n in range(parts.count))
        if len(whole) != parts.size or hashlib.sha256(whole).hexdigest() != parts.sha256:
            raise LearnedStateError(f"incomplete learned state under {key!r} (its parts do "
                                    "not add up to the value they were written as)")
        return whole

    def __setitem__(self, key: str, value: bytes) -> None:
        before = _parts(self.table.get(key, b""))
        size, count = self.part_bytes, 0
        if len(value) > size:
            count = -(-len(value) // size)
            for n in range(count):  # the parts before what names them
                self.table[f"{key}{_PART}{n}"] = value[n * size:(n + 1) * size]
            value = _ENCODER.encode(_Parts(count, len(value),
                                           hashlib.sha256(value).hexdigest()))
        self.table[key] = value
        for n in range(count, before.count if before is not None else 0):
            del self.table[f"{key}{_PART}{n}"]

    def __delitem__(self, key: str) -> None:
        before = _parts(self.table[key])
        del self.table[key]
        for n in range(before.count if before is not None else 0):
            self.table.pop(f"{key}{_PART}{n}", None)

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def __iter__(self) -> Iterator[str]:
        return (key for key in self.table if _PART not in key)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _parts(value: bytes) -> _Parts | None:
    """What a long value's key holds (None: the value itself)."""
    try:  # a sealed record is a map: refused at its first byte
        return _PARTS.decode(value)
    except msgspec.DecodeError:
        return None
