"""The shipped monitoring: alerting rules, the Grafana dashboard, the compose wiring.

Rules are checked and unit-tested by ``promtool`` (Debian's ``prometheus`` package);
every expression of the rules and the dashboard names only metrics the worker exports
(the real Prometheus evaluates them against a real worker in
``test_integration_prometheus.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from intentwatch.pipeline.metrics import Metrics
from tests.prometheus_server import JOB, RULES, tool

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "intentwatch.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "intentwatch.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
_NOT_NAMES = re.compile(
    r'"[^"]*"'                                            # strings
    r"|\{[^}]*\}"                                         # label matchers
    r"|\[[^\]]*\]"                                        # range durations
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\b(?:and|or|unless|bool|offset)\b"                 # operators
    r"|\$\w+"                                             # Grafana variables
)
_IDENTIFIER = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def exported() -> set[str]:
    """The series names the worker's /metrics has."""
    return {family.name + suffix for family in Metrics().registry.collect()
            for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    rest = _NOT_NAMES.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(rest) if not re.fullmatch(r"[0-9.e]+", name)}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_metric_names_reads_expressions_as_promql_does() -> None:
    assert metric_names("histogram_quantile(0.99, sum by (le, event) "
                        "(rate(intentwatch_engine_seconds_bucket[$__rate_interval])))") \
        == {"intentwatch_engine_seconds_bucket"}
    assert metric_names('up{job="intentwatch"} == 0') == {"up"}
    assert metric_names('sum by (le) (rate(a_bucket{x=~"y|z"}[5m])) > 2e3 unless b') \
        == {"a_bucket", "b"}


def test_the_alerting_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_the_alerting_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_CONFIG.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("what", "exprs", "allowed"), [
    ("rules", rule_exprs, {"up"}),
    ("dashboard", dashboard_exprs, set()),
])
def test_expressions_name_only_exported_metrics(what: str, exprs: Any, allowed: set[str]) -> None:
    names = exported()
    for expr in exprs():
        selected = metric_names(expr)
        assert selected, f"{what}: {expr!r} selects no metric"
        assert selected <= names | allowed, f"{what}: {expr!r} names {selected - names}"


def test_the_dashboard_is_a_grafana_dashboard_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [datasource] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) > 0
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] == "timeseries" and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs) > 0
        assert all(target["datasource"] == panel["datasource"] for target in panel["targets"])


def test_compose_runs_prometheus_and_grafana_wired_to_the_worker() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    mounts = {service: dict(_bind_mounts(services[service])) for service in services}
    for service in ("prometheus", "grafana"):
        for source in mounts[service]:
            assert (REPO / source).exists(), f"{service} mounts {source}, which is not there"

    worker = services["worker"]
    port = int(worker["environment"].get("INTENTWATCH_WEB_PORT", 6066))
    assert worker["environment"]["INTENTWATCH_WEB_BIND"] == "0.0.0.0"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert job["static_configs"] == [{"targets": [f"worker:{port}"]}]
    prometheus = mounts["prometheus"]
    assert Path(prometheus["./deploy/prometheus/prometheus.yml"]).name == "prometheus.yml"
    rules_at = Path(prometheus["./deploy/prometheus/prometheus.yml"]).parent
    assert [str(rules_at / name) for name in config["rule_files"]] \
        == [prometheus["./deploy/prometheus/alerts.yml"]]

    [datasource] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    grafana = mounts["grafana"]
    assert grafana["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts (``./…`` volumes)."""
    pairs = [(volume["source"], volume["target"]) if isinstance(volume, dict)
             else volume.split(":")[:2] for volume in service.get("volumes", [])]
    return [(source, target) for source, target in pairs if source.startswith("./")]
