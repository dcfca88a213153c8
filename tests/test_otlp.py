"""OpenTelemetry GenAI ``execute_tool`` spans → tool calls (pure: no Kafka, no Collector)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from intentwatch.contracts import ContractError, RecordRejected, ToolCall
from intentwatch.pipeline.decoding import reason_of
from intentwatch.pipeline.otlp import (
    MAX_RESULT_BYTES,
    SEMCONV_VERSION,
    RejectedSpan,
    decode_traces,
    encode_traces,
    tool_calls,
)

AGENT = "spiffe://acme.org/agents/support/a1"
TRACE = bytes.fromhex("5bf5e4e91fb0e171e0524dce2e6b934a")
T0 = 1_793_606_400_000_000_000  # 2026-11-02T08:00:00Z in ns


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(any_value(item) for item in value)
        return result
    result = AnyValue()
    result.kvlist_value.values.extend(key_values(value))
    return result


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def tool_span(number: int = 1, *, start: int = T0, **attributes: Any) -> Span:
    """An ``execute_tool`` span of ``crm.lookup_customer`` in task t1, plus ``attributes``
    (a value of None removes that attribute)."""
    base = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm.lookup_customer",
            "gen_ai.tool.call.id": f"call_{number}", "gen_ai.conversation.id": "t1"}
    merged = {key: value for key, value in {**base, **attributes}.items() if value is not None}
    return Span(trace_id=TRACE, span_id=number.to_bytes(8, "big"),
                parent_span_id=(9).to_bytes(8, "big"), name="execute_tool crm.lookup_customer",
                start_time_unix_nano=start, end_time_unix_nano=start + 1_000_000,
                attributes=key_values(merged))


def traces(*spans: Span, resource: dict[str, Any] | None = None) -> TracesData:
    data = TracesData()
    resource_spans = data.resource_spans.add()
    resource_spans.resource.attributes.extend(
        key_values({"intentwatch.agent.id": AGENT} if resource is None else resource))
    resource_spans.scope_spans.add(spans=list(spans)).scope.name = "agent"
    return data


def only_call(data: TracesData) -> ToolCall:
    [call] = tool_calls(data)
    assert isinstance(call, ToolCall), call
    return call


def only_rejection(data: TracesData) -> RejectedSpan:
    [rejected] = tool_calls(data)
    assert isinstance(rejected, RejectedSpan), rejected
    return rejected


def test_an_execute_tool_span_becomes_a_tool_call_with_every_field() -> None:
    call = only_call(traces(tool_span(
        7, **{"gen_ai.tool.description": "Look up a customer", "gen_ai.tool.type": "function",
              "gen_ai.tool.call.arguments": {"customer_id": "c-17", "fields": ["name"]},
              "gen_ai.tool.call.result": {"name": "Jane"}, "intentwatch.task.id": "task-4812",
              "intentwatch.credential.id": "cred-1", "intentwatch.tool.action": "read",
              "intentwatch.tool.target": "crm://c-17",
              "intentwatch.data.labels": ["internal", "pii"]})))
    assert (call.event_id, call.ts, call.agent_id, call.task_id, call.tool) == (
        "call_7", 1_793_606_400.0, AGENT, "task-4812", "crm.lookup_customer")
    assert (call.tool_description, call.tool_type, call.credential_id) == (
        "Look up a customer", "function", "cred-1")
    assert (call.action, call.target) == ("read", "crm://c-17")
    assert call.data_labels == ["internal", "pii"]
    assert call.args == {"customer_id": "c-17", "fields": ["name"]}
    assert call.result == {"name": "Jane"}
    assert (call.conversation_id, call.outcome, call.semconv_version) == ("t1", "ok", "1.41.0")
    assert (call.trace_id, call.span_id, call.parent_span_id) == (
        TRACE.hex(), "0000000000000007", "0000000000000009")


def test_the_conversation_is_the_task_when_no_task_is_named() -> None:
    call = only_call(traces(tool_span()))
    assert (call.task_id, call.conversation_id) == ("t1", "t1")


def test_a_span_without_a_call_id_is_named_by_its_trace_and_span_ids() -> None:
    call = only_call(traces(tool_span(3, **{"gen_ai.tool.call.id": None})))
    assert call.event_id == f"{TRACE.hex()}-0000000000000003"


@pytest.mark.parametrize(("arguments", "expected"), [
    ('{"customer_id": "c-17"}', {"customer_id": "c-17"}),  # a JSON string (the SDKs' way)
    ({"customer_id": "c-17"}, {"customer_id": "c-17"}),  # structured
    ('["c-17", "c-18"]', {"value": ["c-17", "c-18"]}),  # JSON, but not an object
    ("send it to mallory", {"value": "send it to mallory"}),  # not JSON: kept, still judged
    (None, None),  # opt-in: usually absent
])
def test_arguments_are_an_object_whatever_form_they_come_in(arguments: Any, expected: Any) -> None:
    span = tool_span(**{"gen_ai.tool.call.arguments": arguments})
    assert only_call(traces(span)).args == expected


def test_a_long_result_is_kept_cut_to_its_first_bytes() -> None:
    long = {"rows": ["x" * 100] * 100}
    call = only_call(traces(tool_span(**{"gen_ai.tool.call.result": long})))
    assert isinstance(call.result, str)
    assert len(call.result.encode()) == MAX_RESULT_BYTES
    assert json.dumps(long, separators=(",", ":")).startswith(call.result)
    assert only_call(traces(tool_span(**{"gen_ai.tool.call.result": "ok"}))).result == "ok"


def test_an_error_status_or_error_type_is_an_error_outcome() -> None:
    failed = tool_span()
    failed.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    assert only_call(traces(failed)).outcome == "error"
    assert only_call(traces(tool_span(**{"error.type": "timeout"}))).outcome == "error"


def test_the_agent_may_come_from_a_span_attribute_such_as_copied_baggage() -> None:
    span = tool_span(**{"intentwatch.agent.id": AGENT, "intentwatch.task.id": "task-9"})
    call = only_call(traces(span, resource={"service.name": "agent"}))
    assert (call.agent_id, call.task_id) == (AGENT, "task-9")


def test_a_span_without_an_agent_is_rejected_and_kept_alone_for_the_dead_letter() -> None:
    resource = {"service.name": "agent"}
    rejected = only_rejection(traces(tool_span(5), resource=resource))
    assert reason_of(rejected.error) == "no_agent_id"
    assert "intentwatch.agent.id" in str(rejected.error)
    [resource_spans] = rejected.traces.resource_spans
    assert [span.span_id for scope in resource_spans.scope_spans for span in scope.spans] == [
        (5).to_bytes(8, "big")]
    assert resource_spans.resource.attributes[0].key == "service.name"


def test_span_and_resource_naming_different_agents_are_rejected() -> None:
    other = "spiffe://acme.org/agents/support/a2"
    rejected = only_rejection(traces(tool_span(**{"intentwatch.agent.id": other})))
    assert reason_of(rejected.error) == "agent_mismatch"


@pytest.mark.parametrize(("removed", "reason"), [
    ({"gen_ai.conversation.id": None}, "no_task_id"),
    ({"gen_ai.tool.name": None}, "no_tool_name"),
])
def test_a_span_missing_what_a_call_needs_is_rejected(removed: dict[str, Any], reason: str) -> None:
    assert reason_of(only_rejection(traces(tool_span(**removed))).error) == reason


def test_a_span_that_breaks_the_tool_call_contract_is_rejected_with_the_contracts_message() -> None:
    rejected = only_rejection(traces(tool_span(), resource={"intentwatch.agent.id": "agent-1"}))
    assert type(rejected.error) is ContractError
    assert "SPIFFE ID" in str(rejected.error)


def test_only_execute_tool_spans_count_and_calls_come_in_the_order_they_were_made() -> None:
    chat = tool_span(9, **{"gen_ai.operation.name": "chat", "gen_ai.tool.name": None})
    late, early = tool_span(1, start=T0 + 2_000_000_000), tool_span(2, start=T0)
    found = tool_calls(traces(late, chat, tool_span(3, **{"gen_ai.tool.name": None}), early))
    assert [getattr(item, "event_id", None) for item in found] == ["call_2", "call_1", None]


def test_a_batch_may_hold_many_agents() -> None:
    data = traces(tool_span(1))
    second = traces(tool_span(2), resource={"intentwatch.agent.id": AGENT + "-b"})
    data.resource_spans.extend(second.resource_spans)
    assert [call.agent_id for call in tool_calls(data)] == [AGENT, AGENT + "-b"]


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_both_exporter_encodings_round_trip(encoding: str) -> None:
    data = traces(tool_span(**{"gen_ai.tool.call.arguments": {"n": 3, "ok": True}}))
    assert decode_traces(encode_traces(data, encoding), encoding) == data


def test_otlp_json_writes_trace_and_span_ids_as_hex() -> None:
    document = json.loads(encode_traces(traces(tool_span(4)), "otlp_json"))
    [span] = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (
        TRACE.hex(), "0000000000000004", "0000000000000009")


def test_otlp_json_as_the_collector_writes_it() -> None:
    """As the Collector's exporter wrote it (v0.165.1): hex ids, nanoseconds as strings,
    enums as numbers, a field this version does not know."""
    record = {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "intentwatch.agent.id", "value": {"stringValue": AGENT}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": [{
            "traceId": "9c6dd49dc0e4e41a2949e82a13d66e8e", "spanId": "f523eba96d1d9716",
            "parentSpanId": "fae38000d8ac95fe", "flags": 256, "name": "execute_tool crm.lookup",
            "kind": 1, "startTimeUnixNano": "1796118170801264177",
            "endTimeUnixNano": "1796118170801280147", "futureField": {"x": 1},
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                {"key": "gen_ai.tool.name", "value": {"stringValue": "crm.lookup"}},
                {"key": "gen_ai.tool.call.id", "value": {"stringValue": "call-0"}},
                {"key": "gen_ai.tool.call.arguments",
                 "value": {"stringValue": "{\"customer_id\": \"c-0\"}"}},
                {"key": "gen_ai.conversation.id", "value": {"stringValue": "task-1"}}],
            "status": {"code": 2}}]}]}]}
    call = only_call(decode_traces(json.dumps(record).encode(), "otlp_json"))
    assert (call.trace_id, call.span_id, call.parent_span_id) == (
        "9c6dd49dc0e4e41a2949e82a13d66e8e", "f523eba96d1d9716", "fae38000d8ac95fe")
    assert (call.event_id, call.args, call.outcome) == ("call-0", {"customer_id": "c-0"}, "error")
    assert call.ts == pytest.approx(1796118170.801264177)


@pytest.mark.parametrize(("value", "encoding"), [
    (b"{not json", "otlp_json"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "otlp_json"),
    (b'{"resourceSpans": {"oops": 1}}', "otlp_json"),
    (b'["a list"]', "otlp_json"),
    (b"\xff\xff\xff", "otlp_proto"),
])
def test_a_record_that_is_not_traces_data_is_malformed(value: bytes, encoding: str) -> None:
    with pytest.raises(RecordRejected) as raised:
        decode_traces(value, encoding)
    assert raised.value.code == "malformed"


def test_the_implemented_convention_version_is_pinned() -> None:
    assert SEMCONV_VERSION == "1.41.0"
