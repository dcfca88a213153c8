"""Publish an agent's telemetry to intentwatch: tool calls, grants and task events.

Every record is checked against its v1 contract *before* it is sent, so a
mistake raises :class:`~intentwatch.contracts.ContractError` at the call site
instead of landing in the dead-letter topic. Records are keyed by the agent's
SPIFFE ID and timestamped with the event's time; the producer is idempotent
with ``acks=all``.

Example::

    from intentwatch import TelemetryPublisher

    agent = "spiffe://acme.org/agents/support/a1"
    with TelemetryPublisher("127.0.0.1:9092") as publisher:
        publisher.publish_task_event({"agent_id": agent, "task_id": "t1", "status": "started"})
        publisher.publish_toolcall({"agent_id": agent, "task_id": "t1",
                                    "tool": "crm.lookup_customer", "target": "crm://c-42"})
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import msgspec

from intentwatch.contracts import (
    KIND_HEADER,
    TOPICS,
    ContractError,
    Grant,
    InputKind,
    TaskEvent,
    ToolCall,
    decode_grant_payload,
    decode_task_event,
    decode_toolcall,
    encode,
)
from intentwatch.sdk.delivery import DEFAULT_BUFFER, DEFAULT_TIMEOUT, Delivery, Policy
from intentwatch.sdk.errors import PublishError
from intentwatch.sdk.instrument import (
    TaskScope,
    ToolCallRecord,
    encode_checked,
    instrument,
    task_scope,
    tool_call,
)

__all__ = ["BOOTSTRAP_ENV", "PublishError", "TelemetryPublisher", "default_bootstrap"]

BOOTSTRAP_ENV = "INTENTWATCH_BOOTSTRAP"
"""Environment variable naming the Kafka bootstrap servers (``host:port[,host:port]``)."""

_PUBLISHED = (TOPICS["events"],)
"""The topic a publisher writes to (it must exist): one log per agent."""

F = TypeVar("F", bound=Callable[..., Any])


def default_bootstrap() -> str:
    """``$INTENTWATCH_BOOTSTRAP``, else ``127.0.0.1:9092``."""
    return os.environ.get(BOOTSTRAP_ENV) or "127.0.0.1:9092"


class TelemetryPublisher:
    """A synchronous, thread-safe publisher of intentwatch telemetry.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers; ``$INTENTWATCH_BOOTSTRAP`` or ``127.0.0.1:9092`` when omitted.
    agent_id
        The SPIFFE ID used when a call or task does not name one (one agent per process).
    policy
        What happens while Kafka is unreachable (see :mod:`intentwatch.sdk.delivery`):
        ``"fail_closed"`` (default: instrumented tools do not run, calls raise
        :class:`PublishError`) or ``"fail_open"`` (tools run; records wait in a bounded
        buffer and are sent in order when Kafka returns).
    timeout
        Seconds any call waits for Kafka at most (default 5).
    buffer_size
        Records a ``fail_open`` publisher buffers while Kafka is unreachable.
    client_id
        Kafka client id, shown in broker logs and metrics.
    producer_config
        Extra :class:`kafka.KafkaProducer` settings (TLS, SASL, ``linger_ms`` ...).

    ``publish_*`` return the validated record as soon as it is queued; :meth:`flush`
    waits until Kafka has acknowledged everything queued and raises
    :class:`PublishError` if some records could not be delivered. Every Kafka problem
    raises an :class:`~intentwatch.sdk.errors.IntentwatchError` whose ``hint`` says
    what to do (a topic that does not exist is never created by publishing to it).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        agent_id: str | None = None,
        policy: Policy = "fail_closed",
        timeout: float = DEFAULT_TIMEOUT,
        buffer_size: int = DEFAULT_BUFFER,
        client_id: str = "intentwatch-publisher",
        **producer_config: Any,
    ) -> None:
        self.bootstrap = bootstrap or default_bootstrap()
        self.agent_id = agent_id
        self.delivery = Delivery(
            self.bootstrap, topics=_PUBLISHED, policy=policy, timeout=timeout,
            buffer_size=buffer_size, client_id=client_id, **producer_config,
        )

    # -- records ------------------------------------------------------------------------

    def publish_toolcall(self, call: ToolCall | Mapping[str, Any]) -> ToolCall:
        """Validate and send one tool call; ``event_id`` and ``ts`` (now) are filled in if absent.

        Example::

            publisher.publish_toolcall({"agent_id": agent, "task_id": "t1",
                                        "tool": "gmail.send_email",
                                        "target": "mailto:jane@acme.org"})
        """
        record = decode_toolcall(encode_checked(self._complete(call), "tool call"))
        self._send("toolcall", record.agent_id, encode(record), record.ts)
        return record

    def publish_task_event(self, event: TaskEvent | Mapping[str, Any]) -> TaskEvent:
        """Validate and send one task event (``status``: started, completed, failed, cancelled)."""
        record = decode_task_event(encode_checked(self._complete(event), "task event"))
        self._send("task", record.agent_id, encode(record), record.ts)
        return record

    def publish_grant(self, grant: str | Grant | Mapping[str, Any]) -> Grant:
        """Send a grant: a compact JWS from your credential broker, or a plain payload.

        The payload is checked against the grant contract (the signature is checked by
        the worker, which accepts plain payloads only when
        ``INTENTWATCH_ALLOW_UNSIGNED_GRANTS`` is set: use those for development only).
        Returns the grant's payload.
        """
        if isinstance(grant, str):
            payload = decode_grant_payload(_jws_payload(grant))
            value = grant.encode()
        else:
            data = msgspec.structs.asdict(grant) if isinstance(grant, Grant) else dict(grant)
            payload = decode_grant_payload(encode_checked(data, "grant"))
            value = encode(payload)
        self._send("grant", payload.agent_id, value, payload.issued_at)
        return payload

    # -- instrumentation ----------------------------------------------------------------

    def task(
        self,
        task_id: str,
        *,
        agent_id: str | None = None,
        credential_id: str | None = None,
        events: bool = True,
    ) -> AbstractContextManager[TaskScope]:
        """Make ``task_id`` the current task of this thread for instrumented tool calls.

        With ``events`` the task's ``started`` event is published on entry, and
        ``completed`` (or ``failed`` when an exception escapes) on exit.

        Example::

            with publisher.task("t1", credential_id="c1"):
                lookup_customer("c-42")
        """
        return task_scope(self, task_id, agent_id=agent_id, credential_id=credential_id,
                          events=events)

    def tool_call(self, tool: str, **fields: Any) -> AbstractContextManager[ToolCallRecord]:
        """Publish one tool call around a block: outcome, duration and sizes are recorded.

        ``fields`` are tool-call contract fields (``target``, ``action``, ``data_labels``,
        ...); ``agent_id``, ``task_id`` and ``credential_id`` default to the current
        :meth:`task`. An exception marks the call ``error`` and propagates.

        Example::

            with publisher.tool_call("gmail.send_email", target="mailto:jane@acme.org",
                                     agent_id=agent, task_id="t1") as call:
                response = send_mail(...)
                call.bytes_in = len(response)
        """
        return tool_call(self, tool, **fields)

    def instrument(
        self,
        tool: str,
        *,
        action: str | None = None,
        target_arg: str | None = None,
        data_labels: tuple[str, ...] = (),
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Decorate a tool function so that each call of it is published.

        ``target_arg`` names the argument holding the call's target; the function's
        arguments and result give ``bytes_out`` and ``bytes_in``.

        Example::

            @publisher.instrument("crm.lookup_customer", action="read", target_arg="customer_id")
            def lookup_customer(customer_id: str) -> dict: ...
        """
        return instrument(self, tool, action=action, target_arg=target_arg,
                          data_labels=data_labels, description=description)

    # -- lifecycle ----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until Kafka acknowledged every queued record (at most ``timeout`` seconds,
        default the publisher's); raise :class:`PublishError` if some were not delivered."""
        self.delivery.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the connection."""
        self.delivery.close(timeout)

    def __enter__(self) -> TelemetryPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _complete(self, record: msgspec.Struct | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(record, msgspec.Struct):
            data = msgspec.structs.asdict(record)
        else:
            data = dict(record)
        data.setdefault("event_id", str(uuid.uuid4()))
        data.setdefault("ts", time.time())
        if self.agent_id is not None:
            data.setdefault("agent_id", self.agent_id)
        return data

    def _send(self, kind: InputKind, agent_id: str, value: bytes, event_time: float) -> None:
        # One topic, keyed by agent: the agent's records stay in the order they are sent.
        # The record's Kafka timestamp is the event's time, so a replay of recorded
        # telemetry reads like the original traffic (the worker checks grants at it).
        self.delivery.send(TOPICS["events"], agent_id.encode(), value, round(event_time * 1000),
                           [(KIND_HEADER, kind.encode())])


def _jws_payload(token: str) -> bytes:
    """The payload of a compact JWS, unverified (the worker verifies the signature)."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise ContractError("grant: not a compact JWS (expected header.payload.signature)")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ContractError("grant: the JWS payload is not base64url") from None
