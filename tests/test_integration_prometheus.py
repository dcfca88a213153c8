"""A real Prometheus scrapes a real worker; the values are read back through its HTTP API.

One worker process and one Prometheus (Debian's package, every second, the shipped alerting
rules loaded) for the module. An agent's grant, calls within it, a violating call, a
malformed record and a grant nobody trusted signed go through the real broker; what
Prometheus then holds must equal the worker's own counters on ``/status``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from intentwatch.contracts import TOPICS
from intentwatch.pipeline.app import INPUT_TOPICS
from intentwatch.tokens.keys import Keyring, generate_key
from tests.conftest import RunningWorker, wait_for
from tests.prometheus_server import JOB, PrometheusServer
from tests.test_monitoring_config import dashboard_exprs, rule_exprs

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics-worker")


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, issuer_key: Any, home: Path) -> Iterator[RunningWorker]:
    running = RunningWorker(kafka_bootstrap, home, issuer_key)
    try:
        yield running
    finally:
        running.close()
        running.stop()


@pytest.fixture(scope="module")
def prometheus(worker: RunningWorker, home: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(home / "prometheus", [worker.url.removeprefix("http://")])
    try:
        wait_for(lambda: server.query(f'up{{job="{JOB}"}}'), lambda up: list(up.values()) == [1],
                 60, "Prometheus to scrape the worker")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def activity(worker: RunningWorker, prometheus: PrometheusServer, kafka_bootstrap: str) -> str:
    """One agent's task through the worker, once Prometheus scrapes it; the agent's id."""
    agent = "spiffe://acme.org/agents/support/metrics-1"
    sdk = worker.publisher
    sdk.publish_grant(worker.grant(agent))
    sdk.publish_grant(worker.grant(agent, "t2", key=generate_key("EdDSA")))  # nobody trusted
    for _ in range(3):
        sdk.publish_toolcall({"agent_id": agent, "task_id": "t1", "tool": "crm.lookup_customer",
                              "credential_id": "c-metrics-1-t1", "target": "crm://c-42",
                              "data_labels": ["internal"]})
    sdk.publish_toolcall({"agent_id": agent, "task_id": "t1", "tool": "iam.update_user_password",
                          "credential_id": "c-metrics-1-t1"})
    sdk.flush()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        producer.send(TOPICS["events"], key=agent.encode(), value=b'{"event_id": ').get(30)
    finally:
        producer.close()
    [revocation] = worker.revocations(agent)
    assert revocation.reason_code == "intent_violation"
    worker.topics["dlq"].of(agent, count=2)
    worker.topics["verdicts"].of(agent, count=4)
    return agent


def by(prometheus: PrometheusServer, expr: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in prometheus.query(expr).items()}


def counters(prometheus: PrometheusServer) -> dict[str, dict[str, float]]:
    """What Prometheus holds, shaped like the worker's /status counters."""
    return {
        "verdicts": by(prometheus, "intentwatch_verdicts_total > 0", "decision"),
        "revocations": by(prometheus, "intentwatch_revocations_total > 0", "reason"),
        "dlq": by(prometheus, "sum by (reason) (intentwatch_dead_letters_total)", "reason"),
    }


def status_counters(worker: RunningWorker) -> dict[str, dict[str, float]]:
    shaped: dict[str, dict[str, float]] = {"verdicts": {}, "revocations": {}, "dlq": {}}
    for name, count in worker.status()["published"].items():
        kind, _, label = name.partition(".")
        if kind in shaped:
            shaped[kind][label] = count
    return shaped


def test_prometheus_holds_what_the_worker_counted(
    worker: RunningWorker, prometheus: PrometheusServer, activity: str
) -> None:
    def both() -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        return status_counters(worker), counters(prometheus)

    _, scraped = wait_for(both, lambda pair: pair[0] == pair[1], 60,
                          "Prometheus to hold the worker's counters")
    assert scraped["revocations"]["intent_violation"] >= 1
    assert scraped["dlq"]["unknown_kid"] >= 1 and scraped["dlq"]["ContractError"] >= 1
    assert scraped["verdicts"]["allow"] >= 3
    assert by(prometheus, "intentwatch_grants_rejected_total", "code")["unknown_kid"] >= 1
    assert prometheus.query("intentwatch_grants_verified_total")[()] >= 1

    # every revocation's latency was observed once; every record the engine saw was timed
    latency = by(prometheus, "intentwatch_revocation_latency_seconds_count > 0", "reason")
    assert latency == scraped["revocations"]
    # every record read was a dead letter or went through the engine once (ticks included)
    wait_for(lambda: prometheus.query(
                 "sum(intentwatch_records_consumed_total) - sum(intentwatch_dead_letters_total)"
                 " - sum(intentwatch_engine_seconds_count)"),
             lambda difference: difference == {(): 0.0}, 30, "records = dead letters + engine")
    data = by(prometheus, 'intentwatch_engine_seconds_count{event!="tick"}', "event")
    assert data == by(prometheus, "intentwatch_event_lag_seconds_count", "event")
    assert data["toolcall"] >= 4 and data["grant"] >= 1


def test_consumer_lag_per_partition_and_table_sizes(
    worker: RunningWorker, prometheus: PrometheusServer, activity: str
) -> None:
    partitions = worker.status()["partitions"]
    expected = {(topic, str(p)) for topic in INPUT_TOPICS for p in partitions}

    def lag(metric: str) -> dict[tuple[str, str], float]:
        return {(dict(labels)["topic"], dict(labels)["partition"]): value
                for labels, value in prometheus.query(metric).items()}

    caught_up = wait_for(lambda: (lag("intentwatch_consumer_lag_records"),
                                  lag("intentwatch_consumer_lag_seconds")),
                         lambda got: all(set(m) == expected and not any(m.values()) for m in got),
                         60, "zero lag on every input partition")
    assert len(caught_up[0]) == len(INPUT_TOPICS) * len(partitions) > 0
    assert by(prometheus, "intentwatch_table_keys", "table")["grants"] >= 1


def test_every_dashboard_expression_returns_data(
    prometheus: PrometheusServer, activity: str
) -> None:
    for expr in dashboard_exprs():
        query = expr.replace("$__rate_interval", "1m")
        wait_for(lambda q=query: prometheus.query(q), bool, 30, f"data for {query!r}")


def test_the_rules_evaluate_and_the_untrusted_grant_alerts(
    prometheus: PrometheusServer, activity: str
) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    loaded = wait_for(rules, lambda got: got and all(r["health"] == "ok" for r in got), 30,
                      "every rule evaluated without error")
    assert len(loaded) == len(rule_exprs())
    firing = wait_for(lambda: prometheus.api("alerts")["alerts"],
                      lambda got: any(a["labels"]["alertname"] == "IntentwatchForgedGrants"
                                      for a in got), 30, "the forged-grant alert")
    [forged] = [a for a in firing if a["labels"]["alertname"] == "IntentwatchForgedGrants"]
    assert forged["labels"]["code"] == "unknown_kid" and forged["state"] == "firing"


def test_status_and_metrics_show_no_secret(worker: RunningWorker, home: Path,
                                           issuer_key: Any, activity: str) -> None:
    secrets = [key.private_jwk()["d"] for key in Keyring.load(home / "keys").keys]
    secrets.append(issuer_key.private_jwk()["d"])
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        metrics = response.read().decode()
    status = json.dumps(worker.status())
    for page in (status, metrics):
        assert not any(secret in page for secret in secrets)
        assert activity not in page and "c-metrics-1-t1" not in page  # no agent or credential
