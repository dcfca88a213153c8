"""What a tool call looks like to the detectors: an :class:`Observation` of the call in its task.

A task's :class:`TaskContext` turns its calls, in order, into observations: the
call's tool, action and target (endpoint, site, registrable domain, inside or
outside the organisation), and its place in the task (previous tool, repeats,
bytes sent, rate, sensitive data read so far, payload growth).

>>> from intentwatch.contracts import ToolCall
>>> from intentwatch.models.catalogue import ToolInfo
>>> agent = "spiffe://acme.org/agents/support/a1"
>>> context = TaskContext(agent)
>>> call = ToolCall(event_id="e1", ts=0.0, agent_id=agent, task_id="t", tool="mail.send",
...     target="mailto:eve@evil.example")
>>> x = context.observe(call, ToolInfo("mail.send", "send"))
>>> x.role, x.site, x.external, x.prev_tool
('spiffe://acme.org/agents/support', 'evil.example', True, '^')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import msgspec

from intentwatch.contracts import LABEL_LEVELS, ToolCall, role_of
from intentwatch.models.catalogue import ToolInfo
from intentwatch.models.intent import (
    IntentCheck,
    TargetParts,
    admin_interface,
    align,
    ordered_concepts,
    parse_target,
    parties_of,
    privilege_of,
)
from intentwatch.models.limits import remember

__all__ = [
    "EXTERNAL_SCHEMES",
    "SENSITIVE_LABELS",
    "ContextState",
    "Observation",
    "TaskContext",
    "task_kind",
    "touches_secrets",
]

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



@lru_cache(maxsize=65536)
def touches_secrets(tool: str, endpoint: str | None) -> bool:
    """Whether a call reads or writes secrets, judged from its tool name and target.

    >>> touches_secrets("vault.read_secret", None), touches_secrets("crm.get_lead", None)
    (True, False)
    >>> touches_secrets("http.fetch", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    True
    """
    return bool(_SECRET_WORDS.search(tool.lower()) or (endpoint and _SECRET_WORDS.search(endpoint)))


@dataclass(frozen=True, slots=True)
class Observation:
    """One tool call as the detectors see it: the call, its place in the task and how it
    aligns with the task's intent. Made once per call; scoring and learning both read it."""

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
    check: IntentCheck | None = None
    """How the call aligns with the task's intent (:func:`~intentwatch.models.intent.align`);
    None without an intent."""
    unasked: float | None = None
    """How far the intent does not ask for this action, ``1 - check.credit`` (0 for a delete
    of a target the task's own calls wrote: cleaning up); None without an intent."""

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


class ContextState(msgspec.Struct, array_like=True):
    """A :class:`TaskContext` as data (:meth:`TaskContext.state`): what it has seen of
    its task's calls, each collection at most ``cap`` keys."""

    agent_id: str
    intent: str | None
    cap: int
    prev_tool: str
    last_ts: float | None
    rate: float
    written: list[str]
    bytes: dict[str, float]
    growing: dict[str, tuple[float, float, int]]
    sensitive: list[str]
    tools: dict[str, int]
    targets: list[tuple[str, str | None, int]]


class TaskContext:
    """What a task has done so far: previous tool, sensitive reads, rate, bytes sent,
    targets written.

    ``observe`` turns each call, in order, into an :class:`Observation`; the
    same sequence is rebuilt when the task is learned. Each of its collections keeps at
    most ``cap`` keys (a task's scratch stays bounded, whatever it calls): past that, a
    new tool or target is counted as seen for the first time, every time.

    >>> agent = "spiffe://acme.org/agents/support/a1"
    >>> context = TaskContext(agent, intent="look up the order")
    >>> call = ToolCall(event_id="e1", ts=0.0, agent_id=agent, task_id="t", tool="crm.get",
    ...     target="crm://c-1", bytes_out=10)
    >>> first = context.observe(call, ToolInfo("crm.get", "read"))
    >>> twin = TaskContext.from_state(context.state())
    >>> twin.observe(call, ToolInfo("crm.get", "read")) == context.observe(
    ...     call, ToolInfo("crm.get", "read"))
    True
    """

    __slots__ = (
        "_bytes",
        "_growing",
        "_intent",
        "_internal",
        "_last_ts",
        "_rate",
        "_sensitive",
        "_targets",
        "_tools",
        "_window",
        "agent_id",
        "cap",
        "kind",
        "prev_tool",
        "role",
        "written",
    )

    START = "^"
    """The previous tool of a task's first call."""

    def __init__(
        self,
        agent_id: str,
        internal_domains: Iterable[str] = (),
        rate_window: float = 60.0,
        intent: str | None = None,
        cap: int = 512,
    ) -> None:
        self.agent_id = agent_id
        self._intent = intent
        self.kind = task_kind(intent)
        self.cap = cap
        """How many written targets the task remembers (its scratch stays bounded)."""
        self.written: dict[str, None] = {}
        """Targets the task's own calls wrote (deleting one of them is cleaning up)."""
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

    def state(self) -> ContextState:
        """What the context has seen, as data (:meth:`from_state` goes on from it)."""
        return ContextState(
            self.agent_id, self._intent, self.cap, self.prev_tool, self._last_ts, self._rate,
            list(self.written), dict(self._bytes), dict(self._growing), list(self._sensitive),
            dict(self._tools), [(tool, target, n) for (tool, target), n in self._targets.items()],
        )

    @classmethod
    def from_state(
        cls, state: ContextState, internal_domains: Iterable[str] = (), rate_window: float = 60.0
    ) -> TaskContext:
        """The context :meth:`state` was taken of (with the same settings)."""
        context = cls(state.agent_id, internal_domains, rate_window, state.intent, state.cap)
        context.prev_tool, context._last_ts, context._rate = (
            state.prev_tool, state.last_ts, state.rate)
        context.written = dict.fromkeys(state.written)
        context._bytes, context._growing = dict(state.bytes), dict(state.growing)
        context._sensitive = dict.fromkeys(state.sensitive)
        context._tools = dict(state.tools)
        context._targets = {(tool, target): n for tool, target, n in state.targets}
        return context

    def observe(self, call: ToolCall, tool: ToolInfo) -> Observation:
        """The observation of ``call``; advances the task's state past it."""
        endpoint = site = domain = None
        external = False
        if call.target:
            parts = parse_target(call.target)
            endpoint, site, domain = parts.endpoint, parts.site, parts.domain
            external = self._outside(parts)
        repeats = _count(self._tools, call.tool, self.cap)
        target_repeats = _count(self._targets, (call.tool, call.target), self.cap)
        ts = call.ts
        if self._last_ts is None:
            self._rate = 1.0
        else:
            self._rate = self._rate * math.exp(-max(ts - self._last_ts, 0.0) / self._window) + 1.0
        self._last_ts = ts
        growth = None
        if call.bytes_out:
            if call.tool in self._bytes or len(self._bytes) < self.cap:
                self._bytes[call.tool] = self._bytes.get(call.tool, 0.0) + call.bytes_out
            if tool.action != "read" and (call.tool in self._growing
                                          or len(self._growing) < self.cap):
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
        check = (
            align(self._intent, tool, call.target, parties, privilege)
            if self._intent is not None else None
        )
        unasked = None if check is None else 1.0 - check.credit
        if tool.action == "write" and call.target:
            remember(self.written, call.target, self.cap)
        elif tool.action == "delete" and call.target in self.written:
            unasked = 0.0  # the task cleans up what it wrote itself: a scratch file
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
            task_bytes_out=self._bytes.get(call.tool, float(call.bytes_out or 0.0)),
            rate=self._rate,
            sensitive=tuple(self._sensitive),
            label_level=level,
            growth=growth,
            parties=parties,
            privilege=privilege,
            kind=self.kind,
            check=check,
            unasked=unasked,
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


K = TypeVar("K")


def _count(counts: dict[K, int], key: K, cap: int) -> int:
    """Count ``key`` once more in ``counts`` (kept while it has fewer than ``cap`` keys);
    how often it was counted, this time included.

    >>> counts = {"a": 1}
    >>> _count(counts, "a", 1), _count(counts, "b", 1), counts
    (2, 1, {'a': 2})
    """
    n = counts.get(key)
    if n is not None:
        counts[key] = n + 1
        return n + 1
    if len(counts) < cap:
        counts[key] = 1
    return 1
