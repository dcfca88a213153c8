"""OpenTelemetry GenAI tool spans as tool calls.

The OpenTelemetry Collector's Kafka exporter writes one ``TracesData`` per record,
many spans each, as OTLP protobuf (``otlp_proto``, its default) or OTLP JSON
(``otlp_json``). Every span whose ``gen_ai.operation.name`` is ``execute_tool``
becomes a :class:`~intentwatch.contracts.ToolCall`, read by the OpenTelemetry
semantic conventions :data:`SEMCONV_VERSION` (GenAI, status Development):

=============================  ==========================================
span                           tool call
=============================  ==========================================
``gen_ai.tool.call.id``        ``event_id`` (else trace id ``-`` span id)
start time                     ``ts``
``gen_ai.tool.name``           ``tool`` (required)
``gen_ai.tool.description``    ``tool_description``
``gen_ai.tool.type``           ``tool_type``
``gen_ai.tool.call.arguments`` ``args`` (structured, or a JSON string)
``gen_ai.tool.call.result``    ``result`` (cut to :data:`MAX_RESULT_BYTES`)
``gen_ai.conversation.id``     ``conversation_id``, and ``task_id`` if no task is named
status ERROR or ``error.type`` ``outcome`` ``error`` (else ``ok``)
trace, span, parent span id    ``trace_id``, ``span_id``, ``parent_span_id``
=============================  ==========================================

The conventions give a span no agent identity. The agent's SPIFFE ID, and the task,
come from the attributes in :data:`ATTRIBUTES`, looked up on the span (where a
baggage span processor copies baggage entries) and then on the resource (set once
per agent process). A span without an agent id, without a task or without a tool
name cannot be judged: it is rejected with that reason, as is one whose span and
resource name different agents.

>>> def attribute(key, value):
...     return {"key": key, "value": {"stringValue": value}}
>>> record = json.dumps({"resourceSpans": [{
...     "resource": {"attributes": [
...         attribute("intentwatch.agent.id", "spiffe://acme.org/agents/support/a1")]},
...     "scopeSpans": [{"spans": [{
...         "traceId": "5bf5e4e91fb0e171e0524dce2e6b934a", "spanId": "a2a5f1117aa8dbe3",
...         "name": "execute_tool crm.lookup_customer",
...         "startTimeUnixNano": "1793606400000000000", "attributes": [
...             attribute("gen_ai.operation.name", "execute_tool"),
...             attribute("gen_ai.tool.name", "crm.lookup_customer"),
...             attribute("gen_ai.tool.call.id", "call_17"),
...             attribute("gen_ai.conversation.id", "task-4812"),
...             attribute("gen_ai.tool.call.arguments", '{"customer_id": "c-17"}')]}]}]}]})
>>> [call] = tool_calls(decode_traces(record.encode(), "otlp_json"))
>>> call.event_id, call.task_id, call.tool, call.args, call.outcome, call.ts
('call_17', 'task-4812', 'crm.lookup_customer', {'customer_id': 'c-17'}, 'ok', 1793606400.0)
>>> call.agent_id, call.span_id, call.semconv_version
('spiffe://acme.org/agents/support/a1', 'a2a5f1117aa8dbe3', '1.41.0')
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from intentwatch.contracts import ContractError, RecordRejected, ToolCall, decode_toolcall

__all__ = [
    "ATTRIBUTES",
    "ENCODINGS",
    "MAX_RESULT_BYTES",
    "SEMCONV_VERSION",
    "RejectedSpan",
    "decode_traces",
    "encode_traces",
    "tool_calls",
]

SEMCONV_VERSION = "1.41.0"
"""The OpenTelemetry semantic conventions release whose GenAI spans are read here (the
last one that holds the GenAI conventions, schema ``https://opentelemetry.io/schemas/1.41.0``);
every tool call and verdict from a span carries it as ``semconv_version``."""

ENCODINGS = ("otlp_proto", "otlp_json")
"""The Kafka exporter's OTLP encodings (``encoding`` in its ``traces`` section)."""

MAX_RESULT_BYTES = 4096
"""A ``gen_ai.tool.call.result`` longer than this, as JSON, is kept as its first bytes."""

ATTRIBUTES = {
    "agent_id": "intentwatch.agent.id",
    "task_id": "intentwatch.task.id",
    "credential_id": "intentwatch.credential.id",
    "action": "intentwatch.tool.action",
    "target": "intentwatch.tool.target",
    "data_labels": "intentwatch.data.labels",
}
"""Tool-call field -> the span or resource attribute it is read from (the span wins).
``intentwatch.agent.id`` (a SPIFFE ID) is required; the task falls back to
``gen_ai.conversation.id``; ``intentwatch.data.labels`` is a string array."""

_EXECUTE_TOOL = "execute_tool"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


@dataclass(frozen=True, slots=True)
class RejectedSpan:
    """An ``execute_tool`` span that cannot be judged, and why."""

    error: ContractError
    traces: TracesData
    """The span alone, with its resource and scope: what a dead letter keeps of it."""


def decode_traces(value: bytes, encoding: str) -> TracesData:
    """The ``TracesData`` of one exporter record; raises ``RecordRejected("malformed")``.

    >>> decode_traces(b'{"resourceSpans": []}', "otlp_json") == TracesData()
    True
    >>> decode_traces(b"{", "otlp_proto")
    Traceback (most recent call last):
    ...
    intentwatch.contracts.RecordRejected: malformed: not an OTLP protobuf TracesData ...
    """
    traces = TracesData()
    if encoding == "otlp_proto":
        try:
            traces.ParseFromString(value)
        except DecodeError as error:
            raise RecordRejected(
                "malformed", f"not an OTLP protobuf TracesData ({error})") from None
        return traces
    if encoding != "otlp_json":
        raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {ENCODINGS}")
    try:
        document = json.loads(value)
        if not isinstance(document, dict):
            raise ValueError(f"a JSON {type(document).__name__}, not an object")
        _convert_ids(document, _hex_to_base64)
        return json_format.ParseDict(document, traces, ignore_unknown_fields=True)
    except (ValueError, TypeError, AttributeError, json_format.ParseError) as error:
        raise RecordRejected("malformed", f"not an OTLP JSON TracesData ({error})") from None


def encode_traces(traces: TracesData, encoding: str) -> bytes:
    """``traces`` in the exporter's ``encoding``: the inverse of :func:`decode_traces`."""
    if encoding == "otlp_proto":
        return traces.SerializeToString()
    document = json_format.MessageToDict(traces, use_integers_for_enums=True)
    _convert_ids(document, _base64_to_hex)
    return json.dumps(document, separators=(",", ":")).encode()


def tool_calls(traces: TracesData) -> list[ToolCall | RejectedSpan]:
    """The tool calls of the ``execute_tool`` spans of ``traces``, in the order they were
    made (a batch holds spans in the order they ended), then the spans rejected; other
    spans are skipped."""
    calls: list[ToolCall] = []
    rejected: list[RejectedSpan] = []
    for resource_spans in traces.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                if attributes.get("gen_ai.operation.name") != _EXECUTE_TOOL:
                    continue
                try:
                    calls.append(tool_call(span, attributes, resource))
                except ContractError as error:
                    rejected.append(RejectedSpan(error, _alone(resource_spans, scope_spans, span)))
    calls.sort(key=lambda call: call.ts)
    return [*calls, *rejected]


def tool_call(span: Span, attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> ToolCall:
    """The tool call of one ``execute_tool`` span, given its decoded attributes and its
    resource's; raises :class:`~intentwatch.contracts.ContractError` if it has none."""
    def named(field: str) -> Any:
        return attributes.get(ATTRIBUTES[field], resource.get(ATTRIBUTES[field]))

    key = ATTRIBUTES["agent_id"]
    agent_id = named("agent_id")
    if agent_id is None:
        raise RecordRejected("no_agent_id", f"the span has no `{key}` (span or resource)")
    if key in attributes and key in resource and attributes[key] != resource[key]:
        raise RecordRejected(
            "agent_mismatch", f"span `{key}` {attributes[key]!r} differs from the resource's "
            f"{resource[key]!r}")
    conversation = attributes.get("gen_ai.conversation.id")
    task_id = named("task_id") or conversation
    if task_id is None:
        raise RecordRejected(
            "no_task_id", f"the span has no `{ATTRIBUTES['task_id']}` nor `gen_ai.conversation.id`")
    tool = attributes.get("gen_ai.tool.name")
    if tool is None:
        raise RecordRejected("no_tool_name", "the span has no `gen_ai.tool.name`")
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    labels = named("data_labels")
    failed = span.status.code == trace_pb2.Status.STATUS_CODE_ERROR or "error.type" in attributes
    fields = {
        "event_id": attributes.get("gen_ai.tool.call.id") or f"{trace_id}-{span_id}",
        "ts": span.start_time_unix_nano / 1e9,
        "agent_id": agent_id,
        "task_id": task_id,
        "tool": tool,
        "credential_id": named("credential_id"),
        "tool_description": attributes.get("gen_ai.tool.description"),
        "tool_type": attributes.get("gen_ai.tool.type"),
        "action": named("action"),
        "target": named("target"),
        "args": _arguments(attributes.get("gen_ai.tool.call.arguments")),
        "result": _capped(attributes.get("gen_ai.tool.call.result")),
        "data_labels": [labels] if isinstance(labels, str) else labels or [],
        "outcome": "error" if failed else "ok",
        "conversation_id": conversation,
        "trace_id": trace_id or None,
        "span_id": span_id or None,
        "parent_span_id": span.parent_span_id.hex() or None,
        "semconv_version": SEMCONV_VERSION,
    }
    present = {name: value for name, value in fields.items() if value is not None}
    return decode_toolcall(msgspec.json.encode(present))  # the contract's checks, all of them


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain Python (bytes as base64 text, like OTLP JSON)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


def _arguments(value: Any) -> dict[str, Any] | None:
    """Tool-call arguments as an object: structured, a JSON string (parsed), or anything
    else kept whole under ``"value"`` so that what the agent sent is still judged."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if value is None or isinstance(value, dict):
        return value
    return {"value": value}


def _capped(value: Any) -> Any:
    """``value``, or the first :data:`MAX_RESULT_BYTES` of its JSON text if it is longer."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if len(text.encode()) <= MAX_RESULT_BYTES:
        return value
    return text.encode()[:MAX_RESULT_BYTES].decode(errors="ignore")


def _alone(resource_spans: ResourceSpans, scope_spans: ScopeSpans, span: Span) -> TracesData:
    alone = TracesData()
    resource = alone.resource_spans.add(resource=resource_spans.resource,
                                        schema_url=resource_spans.schema_url)
    resource.scope_spans.add(scope=scope_spans.scope, schema_url=scope_spans.schema_url,
                             spans=[span])
    return alone


def _convert_ids(document: Any, convert: Callable[[str], str]) -> None:
    """Rewrite the trace and span ids of an OTLP JSON ``TracesData`` in place: OTLP JSON
    writes them as hex, protobuf's JSON mapping as base64."""
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                for item in (span, *_items(span, "links")):
                    for field in _ID_FIELDS:
                        if isinstance(item.get(field), str):
                            item[field] = convert(item[field])


def _items(obj: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    for name in names:
        if name in obj:
            return obj[name] or []
    return []


def _hex_to_base64(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text)).decode()


def _base64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()
