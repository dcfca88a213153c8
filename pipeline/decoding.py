"""Input records to trusted engine events, or an exception that says why not.

All of an agent's inputs share one topic; a record's kind is named by its
``intentwatch-kind`` header (:data:`~intentwatch.contracts.KIND_HEADER`), else read from
its value: a compact JWS or a JSON object with a ``grant_id`` is a grant, one with a
``status`` a task event, any other a tool call. Tool calls and task events are decoded strictly
(:mod:`intentwatch.contracts`); grants are verified JWS
(:class:`~intentwatch.tokens.grants.GrantVerifier`). Every record must be keyed by its
agent's SPIFFE ID: the key decides the partition, and with it the worker that holds
the agent's state.

>>> kind_of({"intentwatch-kind": b"task"}, b"{}"), kind_of({}, b'{"status": "completed"}')
('task', 'task')
>>> kind_of({}, b"eyJhbGciOiJFUzI1NiJ9.eyJ9.c2ln"), kind_of({}, b'{"tool": "crm.get"}')
('grant', 'toolcall')
>>> kind_of({}, b'{"grant_id": "g1"}')
'grant'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import msgspec

from intentwatch.contracts import (
    KIND_HEADER,
    Event,
    Grant,
    InputKind,
    RecordRejected,
    decode_task_event,
    decode_toolcall,
)
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import unverified_payload

__all__ = ["Decoder", "claimed_task", "kind_of", "reason_of"]

_KINDS: frozenset[str] = frozenset(("toolcall", "grant", "task", "tick"))


def reason_of(error: BaseException) -> str:
    """The dead-letter reason: a rejection's ``code``, else the error's class name."""
    return getattr(error, "code", None) or type(error).__name__


def kind_of(headers: Mapping[str, bytes], value: bytes) -> InputKind:
    """The kind of an input record: its header, else the shape of its value."""
    named = headers.get(KIND_HEADER)
    if named is not None:
        kind = named.decode("utf-8", "replace")
        if kind not in _KINDS:
            raise RecordRejected("unknown_kind", f"{KIND_HEADER} header {kind!r} is not one "
                                 f"of {', '.join(sorted(_KINDS))}")
        return kind  # type: ignore[return-value]
    if value[:1] != b"{":
        return "grant"
    try:
        shape = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return "toolcall"  # its decoder says what is wrong
    if isinstance(shape, dict) and "grant_id" in shape:
        return "grant"
    return "task" if isinstance(shape, dict) and "status" in shape else "toolcall"


class Decoder:
    """Decode the records of the input topic."""

    def __init__(self, grants: GrantVerifier) -> None:
        self._grants = grants
        self._decoders: dict[str, Callable[[bytes], Event]] = {
            "toolcall": decode_toolcall,
            "task": decode_task_event,
        }

    def decode(
        self,
        kind: InputKind,
        key: bytes | None,
        value: bytes,
        now: float | Callable[[Grant], float],
    ) -> Event:
        """The event in a record of ``kind``; raises :class:`ContractError` (or a subclass).

        ``now`` is the time a grant is judged valid at, or a function of the grant giving it.
        """
        agent_key = _key_text(key)
        if kind == "grant":
            return self._grants.verify(value, agent_key, now)
        event = self._decoders[kind](value)
        if event.agent_id != agent_key:
            raise RecordRejected(
                "agent_mismatch",
                f"record for {event.agent_id!r} was published under key {agent_key!r}",
            )
        return event


def claimed_task(value: bytes | None) -> tuple[str, str] | None:
    """The ``(agent_id, task_id)`` a grant record names, unverified (a plain payload or a
    JWS's): only to say why that task has no grant, never to grant anything.

    >>> claimed_task(b'{"agent_id": "spiffe://acme.org/a1", "task_id": "t1"}')
    ('spiffe://acme.org/a1', 't1')
    >>> claimed_task(b"junk") is None
    True
    """
    payload = value if value is None or value.lstrip()[:1] == b"{" else unverified_payload(value)
    try:
        data = json.loads(payload) if payload is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    agent_id, task_id = data.get("agent_id"), data.get("task_id")
    return (agent_id, task_id) if isinstance(agent_id, str) and isinstance(task_id, str) else None


def _key_text(key: bytes | None) -> str:
    return key.decode("utf-8", "replace") if key is not None else ""
