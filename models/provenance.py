"""Destination provenance: where a call moves data, money or access, and who vouches for it.

A call that can move something out of its task (a send, share, payment,
post, invitation, access change, an event or booking with participants) has
*destinations*: its target and every address-, account-, URL-, channel- or
handle-shaped value in its arguments, found by the value's shape, whatever
the argument is called. Each destination must be accounted for by one of:

* the intent names it (``jane@customer.example``, ``www.shop.example``,
  ``DE89 3704 …``, ``#sales``; compared normalised);
* an explicit target pattern of the grant covers it (``mailto:*@acme.org``,
  ``iban:DE89*``; never ``*`` or a pattern that is only a scheme);
* it is inside the organisation (the agent's trust domain or a configured
  internal domain, or a channel or handle of the organisation's chat);
* it is *established* for the agent or its role: used in at least ``k``
  distinct tasks that ended without revocation (:class:`Established`).

A destination none of these vouch for is where an injection sends things.

>>> from intentwatch.models.catalogue import ToolInfo
>>> send = ToolInfo("gmail.send_email", "send", "Send an email")
>>> [d.key for d in destinations_of(send, "mailto:Jane@Customer.example",
...     {"cc": ["Eve <eve@mail.example>"], "body": "see www.shop.example/x.Thanks"})]
['jane@customer.example', 'eve@mail.example', 'www.shop.example']
>>> moves_out(ToolInfo("crm.search", "read", "Search customers"))
False
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from intentwatch.models.catalogue import ToolInfo
from intentwatch.models.conformance import target_allowed
from intentwatch.models.intent import (
    ParsedIntent,
    concepts_of,
    is_public_suffix,
    parse_target,
    public_host,
)
from intentwatch.models.learned import Tasks

__all__ = [
    "Destination",
    "Established",
    "Resolution",
    "destinations_of",
    "explicit_patterns",
    "moves_out",
    "resolve",
]

_OUT_CONCEPTS = frozenset({"message", "share", "export", "pay", "schedule"})
"""What a tool does when it can move something out of its task (with ``send`` and
``admin`` actions, which always can)."""
_RECIPIENT_NAMES = frozenset({"to", "cc", "bcc"})
_RECIPIENT_WORDS = frozenset({
    "recipient", "recipients", "payee", "payees", "beneficiary", "beneficiaries", "iban",
    "attendee", "attendees", "participant", "participants", "invitee", "invitees", "guests",
    "member", "members", "grantee", "grantees",
})
"""Argument names (``to``, ``new_recipient``, ``event_attendees``: the last word) that say a
call hands something to someone, whatever its tool is called."""
_NAME_WORD = re.compile(r"[a-z]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_URL = re.compile(r"\b(?:https?|ftp|wss?)://[^\s\"'<>)\],;]+", re.IGNORECASE)
_BARE_HOST = re.compile(
    r"(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}"
    r"(?:/[^\s\"'<>)\],;]*)?",
    re.IGNORECASE,
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CHANNEL = re.compile(r"^(?:slack:|teams:|chat:)?#([a-z0-9][\w.-]{0,79})$", re.IGNORECASE)
_HANDLE = re.compile(r"^@([a-z0-9][\w.-]{1,63})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Destination:
    """One place a call moves something to.

    ``key`` is what is compared and remembered: an e-mail address, a host, an
    IBAN, ``#channel`` or ``@handle`` (lower case, IBANs upper case without spaces);
    ``value`` is where it was found, as written (for the explanation).
    """

    kind: str
    key: str
    value: str


@lru_cache(maxsize=8192)
def _tool_moves_out(name: str, action: str, description: str) -> bool:
    if action in ("send", "admin"):
        return True
    if action in ("read", "delete"):
        return False
    return not _OUT_CONCEPTS.isdisjoint(concepts_of(name) | concepts_of(description))


def moves_out(tool: ToolInfo) -> bool:
    """Whether calls of ``tool`` can move data, money or access out of their task.

    >>> moves_out(ToolInfo("calendar.create_event", "write", "Create an event, invite people"))
    True
    >>> moves_out(ToolInfo("fs.write_file", "write", "Write a file in the workspace"))
    False
    """
    return _tool_moves_out(tool.name, tool.action, tool.description)


@lru_cache(maxsize=4096)
def _names_recipient(argument: str) -> bool:
    """Whether an argument's name says its value receives something.

    >>> [_names_recipient(n) for n in ("to", "newRecipient", "event_attendees", "path_to")]
    [True, True, True, False]
    """
    words = _NAME_WORD.findall(_CAMEL.sub(" ", argument).lower())
    return bool(words) and (
        "_".join(words) in _RECIPIENT_NAMES or words[-1] in _RECIPIENT_WORDS
    )


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string in a call's arguments, nested at most three levels."""
    if isinstance(value, str):
        yield value
    elif depth < 3 and isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


@lru_cache(maxsize=65536)
def _in_text(text: str) -> tuple[Destination, ...]:
    """The destinations one string names: itself when it is a channel or handle, and every
    e-mail address, URL, bare host (with a public suffix) and IBAN in it."""
    stripped = text.strip()
    whole = _CHANNEL.match(stripped)
    if whole:
        return (Destination("channel", "#" + whole.group(1).lower(), stripped),)
    whole = _HANDLE.match(stripped)
    if whole:
        return (Destination("handle", "@" + whole.group(1).lower(), stripped),)
    found: list[Destination] = []
    rest = text
    for email in _EMAIL.findall(text):
        host = public_host(email.rpartition("@")[2])
        if host is not None:
            local = email.rpartition("@")[0].lower()
            found.append(Destination("email", f"{local}@{host}", email))
    rest = _EMAIL.sub(" ", rest)
    for url in _URL.findall(rest):
        host = public_host(parse_target(url).host or "")
        if host is not None:
            found.append(Destination("url", host, url))
    rest = _URL.sub(" ", rest)
    for match in _BARE_HOST.findall(rest):
        host = public_host(match.split("/", 1)[0])
        if host is not None and _link_like(host):
            found.append(Destination("url", host, match))
    for iban in _IBAN.findall(text):
        found.append(Destination("account", iban.replace(" ", "").upper(), iban))
    return tuple(found)


def _link_like(host: str) -> bool:
    """A host written without a scheme that reads as a link (``www.…``, or under a short
    suffix such as ``.com``, ``.io``, ``.co.uk``), not a dotted name (``pierre.schmidt``)."""
    return host.startswith("www.") or len(host.rsplit(".", 1)[-1]) <= 3


def _of_target(target: str) -> tuple[Destination, ...]:
    parts = parse_target(target)
    if parts.scheme == "mailto":
        host = public_host(parts.host or "")
        return (Destination("email", parts.address, target),) if host else ()
    if parts.scheme == "iban":
        return (Destination("account", parts.address, target),)
    if parts.scheme in ("http", "https", "ftp", "ws", "wss", ""):
        host = public_host(parts.host or "")
        return (Destination("url", host, target),) if host else ()
    return _in_text(target.split(":", 1)[1]) if ":" in target else ()


def destinations_of(
    tool: ToolInfo, target: str | None, args: Mapping[str, Any] | None
) -> tuple[Destination, ...]:
    """Every destination of a call that moves something out of its task (else none),
    each once, the target's first. A call moves something out when its tool can
    (:func:`moves_out`) or, for a write, when an argument's name says it has a recipient
    (``recipient``, ``attendees``, ``members``, ``to``). The target counts for a send,
    or when it is an address or account itself (a write or access change acts on its
    target's system; what it hands out goes where its arguments say)."""
    if not moves_out(tool) and not (
        tool.action in ("write", "unknown") and any(map(_names_recipient, args or {}))
    ):
        return ()
    found: dict[str, Destination] = {}
    if target and (tool.action == "send" or target.lower().startswith(("mailto:", "iban:"))):
        for destination in _of_target(target):
            found.setdefault(destination.key, destination)
    for text in _strings(args or {}):
        for destination in _in_text(text):
            found.setdefault(destination.key, destination)
    return tuple(found.values())


@lru_cache(maxsize=16384)
def _explicit(pattern: str) -> bool:
    """A target pattern that names something: not ``*``, not only a scheme (``mailto:*``,
    ``https://*``) and not only a public suffix (``*.com``)."""
    rest = pattern.split(":", 1)[1] if re.match(r"^[a-z][a-z0-9+.-]*:", pattern) else pattern
    literal = rest.replace("*", "").replace("?", "").strip("/.@ ")
    return bool(literal) and not is_public_suffix(literal)


def explicit_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """The grant target patterns that vouch for a destination.

    >>> explicit_patterns(["*", "mailto:*", "https://*", "*.com", "mailto:*@acme.org", "iban:DE8*"])
    ('mailto:*@acme.org', 'iban:DE8*')
    """
    return tuple(p for p in patterns if _explicit(p))


class Established:
    """Destinations (or any other keys) confirmed by distinct clean tasks, per agent and role.

    :meth:`learn_task` takes the keys one task used, once each, when the task
    ended without revocation; a key is established for an agent when its
    decayed count of tasks there reaches ``k - 0.5`` (for ``k = 2``: two tasks,
    the older one at most ``half_life_tasks`` of that agent's tasks ago), or
    for the agent's role likewise (counted over the role's tasks). Each scope
    keeps at most ``max_keys`` keys (the role ``level_scale`` times more); the
    weakest go first.

    >>> seen = Established(k=2)
    >>> seen.learn_task("spiffe://a/r/a1", "spiffe://a/r", ["iban:X"])
    >>> seen.established("spiffe://a/r/a1", "spiffe://a/r", "iban:X")
    False
    >>> seen.learn_task("spiffe://a/r/a2", "spiffe://a/r", ["iban:X"])
    >>> seen.established("spiffe://a/r/a1", "spiffe://a/r", "iban:X")
    True
    """

    def __init__(
        self, k: int = 2, half_life_tasks: float = 500.0, max_keys: int = 2048,
        level_scale: float = 8.0,
    ) -> None:
        self.k = k
        self.half_life_tasks = half_life_tasks
        self._caps = (max_keys, int(max_keys * level_scale))
        self._scopes: dict[str, tuple[int, dict[str, tuple[float, int]]]] = {}
        """scope (agent or role id) -> (tasks learned there, key -> (count, at task))."""

    def _count(self, scope: str, key: str) -> float:
        held = self._scopes.get(scope)
        if held is None:
            return 0.0
        clock, keys = held
        return self._decayed(keys.get(key), clock)

    def _decayed(self, entry: tuple[float, int] | None, clock: int) -> float:
        """A (count, at task) entry's count, decayed to the scope's task ``clock``."""
        if entry is None:
            return 0.0
        count, at = entry
        return float(count * 0.5 ** ((clock - at) / self.half_life_tasks))

    def established(self, agent_id: str, role: str, key: str) -> bool:
        """Whether ``key`` is confirmed for the agent or its role."""
        need = self.k - 0.5
        return self._count(agent_id, key) >= need or self._count(role, key) >= need

    def history(self, scope: str) -> int:
        """How many clean tasks ``scope`` (an agent or a role) has taught."""
        held = self._scopes.get(scope)
        return held[0] if held is not None else 0

    def tasks(self, agent_id: str, role: str, key: str) -> float:
        """The larger of the agent's and the role's decayed task counts of ``key``."""
        return max(self._count(agent_id, key), self._count(role, key))

    def learn_task(self, agent_id: str, role: str, keys: Sequence[str]) -> None:
        """One clean task of ``agent_id`` used ``keys``."""
        unique = dict.fromkeys(keys)
        for scope, cap in ((agent_id, self._caps[0]), (role, self._caps[1])):
            clock, table = self._scopes.get(scope, (0, {}))
            clock += 1
            for key in unique:
                table[key] = (self._decayed(table.get(key), clock) + 1.0, clock)
            if len(table) > cap * 1.1:
                ranked = sorted(table, key=lambda k: self._decayed(table[k], clock))
                for key in ranked[: len(table) - cap]:
                    del table[key]
            self._scopes[scope] = (clock, table)

    def scopes(self) -> set[str]:
        """The agents and roles something was learned of."""
        return set(self._scopes)

    def scope_state(self, scope: str) -> Tasks | None:
        """What was learned of ``scope`` (an agent or a role), as data (None: nothing)."""
        held = self._scopes.get(scope)
        if held is None:
            return None
        clock, keys = held
        return Tasks(clock, list(keys), [c for c, _ in keys.values()],
                     [at for _, at in keys.values()])

    def load_scope(self, scope: str, data: Tasks) -> None:
        """Take over what :meth:`scope_state` gave."""
        self._scopes[scope] = (data.tasks, {
            key: (count, at) for key, count, at in zip(data.keys, data.counts, data.at,
                                                       strict=True)})

    def forget_scope(self, scope: str) -> None:
        """Forget what was learned of ``scope`` (:meth:`scope_state` gave it)."""
        self._scopes.pop(scope, None)

    def __len__(self) -> int:
        return sum(len(keys) for _, keys in self._scopes.values())


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one destination is accounted for: ``how`` is ``named``, ``grant``,
    ``internal``, ``established`` or ``None`` (nothing vouches for it)."""

    destination: Destination
    how: str | None
    tasks: float = 0.0
    """For an unresolved destination: in how many clean tasks the agent or role used it."""


def named_in(parsed: ParsedIntent, destination: Destination) -> bool:
    """Whether the intent names a destination (normalised), or the domain it is on.

    >>> from intentwatch.models.intent import parse_intent
    >>> parsed = parse_intent("Post it to www.shop.example.Then mail Bob@Partner.example.")
    >>> [named_in(parsed, d) for d in (Destination("url", "www.shop.example", ""),
    ...     Destination("email", "bob@partner.example", ""),
    ...     Destination("email", "eve@partner.example", ""))]
    [True, True, False]
    """
    key, kind = destination.key, destination.kind
    if kind == "email":
        if key in parsed.emails:
            return True
        host = key.rpartition("@")[2]
        return host in parsed.hosts or any(host.endswith("." + h) for h in parsed.hosts)
    if kind == "account":
        return key in parsed.ibans
    if kind == "channel":
        return key in parsed.channels
    if kind == "handle":
        return key.lstrip("@") in parsed.words or key in parsed.handles
    return key in parsed.hosts or any(key.endswith("." + h) for h in parsed.hosts) or (
        parsed.names_domain(parse_target("https://" + key))
    )


def resolve(
    destinations: Sequence[Destination],
    *,
    parsed: ParsedIntent | None,
    patterns: Sequence[str],
    internal: frozenset[str],
    established: Established,
    agent_id: str,
    role: str,
) -> tuple[Resolution, ...]:
    """How each destination is accounted for (``patterns``: the grant's explicit ones)."""
    resolutions = []
    for destination in destinations:
        how: str | None = None
        if parsed is not None and named_in(parsed, destination):
            how = "named"
        elif patterns and target_allowed(patterns, _as_target(destination)):
            how = "grant"
        elif _inside(destination, internal):
            how = "internal"
        elif established.established(agent_id, role, destination.key):
            how = "established"
        tasks = 0.0 if how else established.tasks(agent_id, role, destination.key)
        resolutions.append(Resolution(destination, how, tasks))
    return tuple(resolutions)


def _as_target(destination: Destination) -> str:
    if destination.kind == "email":
        return "mailto:" + destination.key
    if destination.kind == "account":
        return "iban:" + destination.key
    if destination.kind == "url":
        value = destination.value
        return value if "://" in value else "https://" + value
    return destination.value


def _inside(destination: Destination, internal: frozenset[str]) -> bool:
    if destination.kind in ("channel", "handle"):
        return True  # the organisation's own chat workspace
    if destination.kind == "account":
        return False
    host = destination.key.rpartition("@")[2]
    domain = parse_target("https://" + host).domain
    return domain in internal
