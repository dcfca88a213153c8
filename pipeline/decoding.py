"""Input records to trusted engine events, or an exception that says why not.

Tool calls and task events are decoded strictly (:mod:`intentwatch.contracts`); grants
are verified JWS (:class:`~intentwatch.tokens.grants.GrantVerifier`). Every record must
be keyed by its agent's SPIFFE ID: the key decides the partition, and with it the
worker that holds the agent's state.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from intentwatch.contracts import (
    TOPICS,
    Event,
    RecordRejected,
    decode_task_event,
    decode_toolcall,
)
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import unverified_payload

__all__ = ["Decoder", "claimed_task", "reason_of"]


def reason_of(error: BaseException) -> str:
    """The dead-letter reason: a rejection's ``code``, else the error's class name."""
    return getattr(error, "code", None) or type(error).__name__


class Decoder:
    """Decode the records of the three input topics."""

    def __init__(self, grants: GrantVerifier) -> None:
        self._grants = grants
        self._decoders: dict[str, Callable[[bytes], Event]] = {
            TOPICS["toolcalls"]: decode_toolcall,
            TOPICS["tasks"]: decode_task_event,
        }

    def decode(self, topic: str, key: bytes | None, value: bytes | None, now: float) -> Event:
        """The event in a record of ``topic``; raises :class:`ContractError` (or a subclass)."""
        if value is None:
            raise RecordRejected("malformed", "record has no value")
        agent_key = _key_text(key)
        if topic == TOPICS["grants"]:
            return self._grants.verify(value, agent_key, now)
        event = self._decoders[topic](value)
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
