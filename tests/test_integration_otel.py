"""OpenTelemetry spans end to end, all real: an agent instrumented with the OpenTelemetry
Python SDK exports OTLP to the Collector built by :mod:`intentwatch.local.otelcol`, whose
Kafka exporter writes to the session's broker; a worker process reads the spans, judges
the tool calls, and a violating tool span is revoked at the ``RevocationSubscriber``.
Both exporter encodings, each with its own topic, Collector and worker.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from intentwatch.contracts import DeadLetterHeaders
from intentwatch.local import otelcol
from tests.conftest import REPO, RunningWorker, wait_for

# A first run builds the Collector (minutes); `make test` builds it before the suite.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]


class Agent:
    """An agent process's tracing: the OpenTelemetry SDK exporting OTLP/HTTP to the Collector,
    its SPIFFE ID a resource attribute and the header the Collector keys records by."""

    def __init__(self, collector: otelcol.LocalCollector, agent_id: str,
                 resource: dict[str, str] | None = None) -> None:
        self.provider = TracerProvider(resource=Resource.create(
            {"service.name": "support-agent", "intentwatch.agent.id": agent_id}
            if resource is None else resource))
        # The task runner's baggage (intentwatch.*) on every span, as the docs say.
        self.provider.add_span_processor(
            BaggageSpanProcessor(lambda key: key.startswith("intentwatch.")))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            f"{collector.http_endpoint}/v1/traces", headers={"intentwatch-agent-id": agent_id})))
        self.tracer = self.provider.get_tracer("support-agent")

    def call_tool(self, tool: str, call_id: str, conversation: str, **attributes: Any) -> None:
        """One tool call, traced as GenAI semantic conventions 1.41.0 say."""
        with self.tracer.start_as_current_span(f"execute_tool {tool}", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id, "gen_ai.conversation.id": conversation,
            **attributes,
        }) as span:
            span.set_status(Status(StatusCode.OK))

    def close(self) -> None:
        assert self.provider.force_flush(10_000)
        self.provider.shutdown()


# First in the module: the `otel` fixture's workers (module scope) would judge this
# example's calls too (every live worker reads the shared input log), without its
# unsigned grant, and add their verdicts to this run's.
def test_the_readme_example_is_judged(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's commands, as its worker and Collector run them (unsigned grants
    allowed, the shipped configuration), then its Python code as it stands."""
    commands, python = readme_example()
    assert commands == ["intentwatch kafka up", "intentwatch topics create",
                        "INTENTWATCH_ALLOW_UNSIGNED_GRANTS=1 intentwatch worker &",
                        "python -m intentwatch.local.otelcol run &"]
    topic = f"t-{uuid.uuid4().hex[:12]}-otlp_spans"
    worker = RunningWorker(kafka_bootstrap, tmp_path, issuer_key, settings={
        "INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "1", "INTENTWATCH_OTLP_TOPIC": topic})
    try:
        collector = otelcol.start(kafka_bootstrap, tmp_path / "otelcol.log", topic=topic)
        try:
            monkeypatch.setenv("INTENTWATCH_BOOTSTRAP", kafka_bootstrap)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                               f"{collector.http_endpoint}/v1/traces")
            started = time.time()
            exec(compile(python, "README.md", "exec"), {"__name__": "readme"})
            agent = "spiffe://acme.org/agents/support/agent-7"
            # A new worker first reads the whole input log the session's tests wrote.
            # Earlier tests ran the same example: keep the verdicts of this run's calls (by
            # their event time, not by when the worker, catching up, judged them).
            def this_run() -> list[dict[str, Any]]:
                return [v for v in map(json.loads, (r.value for r in verdicts_of(agent)))
                        if datetime.fromisoformat(v["ts"]).timestamp() >= started - 1]

            verdicts_of = worker.topics["verdicts"].now
            verdicts = wait_for(this_run, lambda got: len(got) >= 2, 600,
                                f"2 verdicts for {agent} of this run")
            assert [(v["tool"], v["decision"], v["semconv_version"]) for v in verdicts] == [
                ("crm.lookup_customer", "allow", "1.41.0"),
                ("iam.update_user_password", "revoke", "1.41.0")]
        finally:
            collector.stop()
    finally:
        worker.close()
        worker.stop()


@pytest.fixture(scope="module", params=["otlp_proto", "otlp_json"])
def otel(
    request: pytest.FixtureRequest, kafka_bootstrap: str, issuer_key: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningWorker, otelcol.LocalCollector]]:
    """A worker reading one encoding from its own span topic, and a Collector writing it."""
    encoding = request.param
    topic = f"t-{uuid.uuid4().hex[:12]}-otlp_spans"
    home = tmp_path_factory.mktemp(f"otel-{encoding}")
    worker = RunningWorker(kafka_bootstrap, home, issuer_key, settings={
        "INTENTWATCH_OTLP_TOPIC": topic, "INTENTWATCH_OTLP_ENCODING": encoding})
    try:
        collector = otelcol.start(kafka_bootstrap, home / "otelcol.log", topic=topic,
                                  encoding=encoding)
        try:
            yield worker, collector
        finally:
            collector.stop()
    finally:
        worker.close()
        worker.stop()


def test_a_violating_tool_span_is_revoked_at_the_subscriber(
    otel: tuple[RunningWorker, otelcol.LocalCollector], agent: str
) -> None:
    worker, collector = otel
    worker.publisher.publish_grant(worker.grant(agent, "t1"))
    worker.publisher.flush()
    sdk = Agent(collector, agent)
    task = context.attach(baggage.set_baggage("intentwatch.task.id", "t1"))  # the task runner
    try:  # the model's conversation is not the task: the baggage names the task
        sdk.call_tool("crm.lookup_customer", "call_1", "conv-9", **{
            "gen_ai.tool.call.arguments": json.dumps({"customer_id": "c-42"}),
            "intentwatch.tool.target": "crm://c-42", "intentwatch.data.labels": ["internal"]})
        sdk.call_tool("iam.update_user_password", "call_2", "conv-9", **{
            "gen_ai.tool.call.arguments": json.dumps({"user": "admin"})})
    finally:
        context.detach(task)
    sdk.close()

    [revocation] = worker.revocations(agent)
    assert (revocation.task_id, revocation.reason_code) == ("t1", "intent_violation")
    assert revocation.evidence == ["call_2"]
    verdicts = [json.loads(r.value) for r in worker.topics["verdicts"].of(agent, 2)]
    assert [(v["event_id"], v["decision"]) for v in verdicts] == [
        ("call_1", "allow"), ("call_2", "revoke")]
    assert {v["semconv_version"] for v in verdicts} == {"1.41.0"}
    assert worker.status()["spans"]["tool_calls"] == 2


def test_a_tool_span_without_an_agent_id_is_a_dead_letter(
    otel: tuple[RunningWorker, otelcol.LocalCollector], agent: str
) -> None:
    worker, collector = otel
    sdk = Agent(collector, agent, resource={"service.name": "support-agent"})
    sdk.call_tool("crm.lookup_customer", "call_1", "t1")
    sdk.close()

    [record] = worker.topics["dlq"].of(agent)  # keyed as the Collector keyed the record
    headers = dict(record.headers)
    assert headers[DeadLetterHeaders.ERROR_CLASS] == b"no_agent_id"
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == worker.status()["spans"]["topic"].encode()
    assert worker.topics["verdicts"].now(agent) == []


def readme_example() -> tuple[list[str], str]:
    """The shell commands and the Python code of the README's OpenTelemetry section."""
    section = (REPO / "README.md").read_text().split("## OpenTelemetry spans in", 1)[1]
    shell, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, re.DOTALL)[:2]
    commands = [line.split("#", 1)[0].strip() for line in shell.splitlines()]
    return [command for command in commands if command], python
