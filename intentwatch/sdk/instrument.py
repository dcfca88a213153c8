"""Turn an agent's tool calls into published telemetry: a task scope, a block, a decorator.

Use them through a :class:`~intentwatch.sdk.publisher.TelemetryPublisher`::

    publisher = TelemetryPublisher(agent_id="spiffe://acme.org/agents/support/a1")

    @publisher.instrument("crm.lookup_customer", action="read", target_arg="customer_id")
    def lookup_customer(customer_id: str) -> dict:
        return crm.get(customer_id)

    with publisher.task("ticket-42", credential_id=credential_id):   # started ... completed
        lookup_customer("c-17")                                      # one tool call, outcome ok
        with publisher.tool_call("gmail.send_email", target="mailto:jane@acme.org") as call:
            call.bytes_out = len(body)
            mailer.send(body)

The record is validated when the call *starts*, so a missing task or a bad field
raises :class:`~intentwatch.contracts.ContractError` before the tool runs (and, with
the default ``fail_closed`` policy, so does Kafka not having acknowledged the records
published before: :class:`~intentwatch.sdk.errors.PublishError`); it is
published when the call ends, with its outcome (``ok``, ``error``, or
``denied`` if the caller set it), duration and sizes.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from intentwatch.contracts import ContractError, ToolCall, decode_toolcall, encode

if TYPE_CHECKING:
    from intentwatch.sdk.publisher import TelemetryPublisher

__all__ = [
    "TaskScope",
    "ToolCallRecord",
    "encode_checked",
    "instrument",
    "size_of",
    "task_scope",
    "tool_call",
]

F = TypeVar("F", bound=Callable[..., Any])
Outcome = Literal["ok", "error", "denied"]


@dataclass(frozen=True, slots=True)
class TaskScope:
    """The task that instrumented tool calls of the current thread (or asyncio task) serve."""

    agent_id: str | None
    task_id: str
    credential_id: str | None = None


_current: ContextVar[TaskScope | None] = ContextVar("intentwatch_task", default=None)


@dataclass
class ToolCallRecord:
    """A tool call in progress: set what you learn while it runs.

    ``outcome`` is set for you (``ok``, or ``error`` when an exception escapes)
    unless you set it, e.g. to ``denied``. After the block, ``duration`` holds
    the seconds it took and ``published`` the record that was sent.
    """

    event_id: str
    ts: float
    fields: dict[str, Any]
    """The other contract fields given at the start (tool, agent, task, ...)."""
    target: str | None = None
    data_labels: list[str] = field(default_factory=list)
    bytes_out: int | None = None
    bytes_in: int | None = None
    outcome: Outcome | None = None
    duration: float | None = None
    published: ToolCall | None = None

    def as_record(self) -> dict[str, Any]:
        """The tool-call contract fields as they stand."""
        record = {**self.fields, "event_id": self.event_id, "ts": self.ts,
                  "data_labels": self.data_labels, "outcome": self.outcome}
        optional = {"target": self.target, "bytes_out": self.bytes_out, "bytes_in": self.bytes_in}
        record.update({name: value for name, value in optional.items() if value is not None})
        return record


@contextmanager
def task_scope(
    publisher: TelemetryPublisher,
    task_id: str,
    *,
    agent_id: str | None = None,
    credential_id: str | None = None,
    events: bool = True,
) -> Iterator[TaskScope]:
    """See :meth:`TelemetryPublisher.task`."""
    scope = TaskScope(agent_id or publisher.agent_id, task_id, credential_id)
    if events:
        _publish_status(publisher, scope, "started")
    token = _current.set(scope)
    status = "completed"
    try:
        yield scope
    except Exception:
        status = "failed"
        raise
    except BaseException:  # KeyboardInterrupt, cancellation
        status = "cancelled"
        raise
    finally:
        _current.reset(token)
        if events:
            _publish_status(publisher, scope, status)


def _publish_status(publisher: TelemetryPublisher, scope: TaskScope, status: str) -> None:
    event = {"task_id": scope.task_id, "status": status}
    if scope.agent_id is not None:
        event["agent_id"] = scope.agent_id
    publisher.publish_task_event(event)


@contextmanager
def tool_call(
    publisher: TelemetryPublisher, tool: str, **fields: Any
) -> Iterator[ToolCallRecord]:
    """See :meth:`TelemetryPublisher.tool_call`."""
    draft: dict[str, Any] = {"tool": tool, **fields}
    scope = _current.get()
    if scope is not None:
        inherited = {"agent_id": scope.agent_id, "task_id": scope.task_id,
                     "credential_id": scope.credential_id}
        for name, value in inherited.items():
            if value is not None:
                draft.setdefault(name, value)
    if publisher.agent_id is not None:
        draft.setdefault("agent_id", publisher.agent_id)
    record = ToolCallRecord(
        event_id=draft.pop("event_id", None) or str(uuid.uuid4()),
        ts=draft.pop("ts", None) or time.time(),
        target=draft.pop("target", None),
        data_labels=list(draft.pop("data_labels", ())),
        bytes_out=draft.pop("bytes_out", None),
        bytes_in=draft.pop("bytes_in", None),
        outcome=draft.pop("outcome", None),
        fields=draft,
    )
    decode_toolcall(encode_checked(record.as_record(), "tool call"))  # fail before the tool runs
    publisher.delivery.ensure_delivered()  # fail closed: the tool runs once Kafka has the rest
    started = time.perf_counter()
    try:
        yield record
    except BaseException:
        record.outcome = record.outcome or "error"
        raise
    else:
        record.outcome = record.outcome or "ok"
    finally:
        record.duration = time.perf_counter() - started
        record.published = publisher.publish_toolcall(record.as_record())


def instrument(
    publisher: TelemetryPublisher,
    tool: str,
    *,
    action: str | None = None,
    target_arg: str | None = None,
    data_labels: tuple[str, ...] = (),
    description: str | None = None,
) -> Callable[[F], F]:
    """See :meth:`TelemetryPublisher.instrument`; works on plain and ``async`` functions."""
    extra = {name: value for name, value in
             {"action": action, "tool_description": description}.items() if value is not None}

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        if target_arg is not None and target_arg not in signature.parameters:
            raise ValueError(f"{function.__qualname__} has no argument {target_arg!r}")

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]):
            arguments = signature.bind(*args, **kwargs).arguments
            target = arguments.get(target_arg) if target_arg is not None else None
            return tool_call(
                publisher, tool, target=None if target is None else str(target),
                data_labels=list(data_labels), bytes_out=size_of(arguments), **extra,
            )

        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with start(args, kwargs) as call:
                    result = await function(*args, **kwargs)
                    call.bytes_in = size_of(result)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with start(args, kwargs) as call:
                result = function(*args, **kwargs)
                call.bytes_in = size_of(result)
                return result

        return wrapper  # type: ignore[return-value]

    return decorate


def size_of(value: Any) -> int | None:
    """Bytes of a payload: raw length for bytes and text, else the length of its JSON.

    >>> size_of(b"abc"), size_of("héllo"), size_of({"id": 7}), size_of(None)
    (3, 6, 9, 0)
    """
    if value is None:
        return 0
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return None


def encode_checked(data: Mapping[str, Any], what: str) -> bytes:
    """JSON bytes of ``data``, or :class:`ContractError` naming ``what`` if it cannot be encoded."""
    try:
        return encode(dict(data))
    except (TypeError, msgspec.EncodeError) as exc:
        raise ContractError(f"{what}: {exc}") from None
