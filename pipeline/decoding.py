"""Input records to trusted engine events, or an exception that says why not.

Tool calls and task events are decoded strictly (:mod:`intentwatch.contracts`); grants
are verified JWS (:class:`~intentwatch.tokens.grants.GrantVerifier`). Every record must
be keyed by its agent's SPIFFE ID: the key decides the partition, and with it the
worker that holds the agent's state.
"""

from __future__ import annotations

from collections.abc import Callable

from intentwatch.contracts import (
    TOPICS,
    Event,
    RecordRejected,
    decode_task_event,
    decode_toolcall,
)
from intentwatch.tokens.grants import GrantVerifier

__all__ = ["Decoder", "reason_of"]


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


def _key_text(key: bytes | None) -> str:
    return key.decode("utf-8", "replace") if key is not None else ""
