"""The span input's faust agent with ``agent.test_context()``: Collector records in, tool
calls out on the tool-call topic keyed by agent, dead letters for what cannot be judged."""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from intentwatch.contracts import KIND_HEADER, DeadLetterHeaders, decode_toolcall
from intentwatch.pipeline.app import Pipeline
from intentwatch.pipeline.otlp import decode_traces, encode_traces
from tests.pipeline_harness import Sent, agent_id, grant_token, put
from tests.test_otlp import tool_span, traces


def batch(*agents: str | None) -> TracesData:
    """One record: a tool span for each of ``agents`` (None: a span with no agent id)."""
    data = TracesData()
    for number, agent in enumerate(agents, 1):
        resource = {"service.name": "agent"} if agent is None else {"intentwatch.agent.id": agent}
        data.resource_spans.extend(traces(tool_span(number), resource=resource).resource_spans)
    return data


async def test_tool_spans_are_rekeyed_by_agent_onto_the_input_topic(
    pipeline: Pipeline, sent: Sent
) -> None:
    first, second = agent_id(), agent_id()
    async with pipeline.spans.agent.test_context() as spans:
        await spans.put(encode_traces(batch(first, second), "otlp_proto"), key=b"trace-id")

    forwarded = sent.on("events")
    assert [key for key, _, _ in forwarded] == [first.encode(), second.encode()]
    assert {headers[KIND_HEADER] for _, _, headers in forwarded} == {b"toolcall"}
    calls = [decode_toolcall(value) for _, value, _ in forwarded]
    assert [(c.agent_id, c.event_id, c.semconv_version) for c in calls] == [
        (first, "call_1", "1.41.0"), (second, "call_2", "1.41.0")]
    assert sent.on("dlq") == []
    assert pipeline.status()["spans"]["tool_calls"] == 2


async def test_a_span_without_an_agent_is_a_dead_letter_holding_that_span_alone(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    data = batch(agent, None)
    record = encode_traces(data, "otlp_proto")
    async with pipeline.spans.agent.test_context() as spans:
        await spans.put(record, key=None, partition=1)

    assert [key for key, _, _ in sent.on("events")] == [agent.encode()]
    [(key, value, headers)] = sent.on("dlq")
    assert key is None
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == b"otlp_spans"
    assert headers[DeadLetterHeaders.SOURCE_PARTITION] == b"1"
    assert headers[DeadLetterHeaders.ERROR_CLASS] == b"no_agent_id"
    assert list(decode_traces(value, "otlp_proto").resource_spans) == [data.resource_spans[1]]


async def test_a_record_that_cannot_be_read_is_a_dead_letter_and_the_next_is_read(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.spans.agent.test_context() as spans:
        await spans.put(b"\xff\xff", key=None)
        await spans.put(encode_traces(batch(agent), "otlp_proto"), key=None)

    [(_, value, headers)] = sent.on("dlq")
    assert (value, headers[DeadLetterHeaders.ERROR_CLASS]) == (b"\xff\xff", b"malformed")
    assert len(sent.on("events")) == 1


async def test_a_call_from_a_span_is_judged_and_its_verdict_names_the_conventions(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.spans.agent.test_context() as spans:
        await spans.put(encode_traces(batch(agent), "otlp_proto"), key=None)
    [(_, value, _)] = sent.on("events")
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        await put(events, "toolcall", value, agent)

    [verdict] = sent.verdicts()
    assert (verdict["event_id"], verdict["semconv_version"]) == ("call_1", "1.41.0")

