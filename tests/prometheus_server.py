"""A real Prometheus server for the tests (Debian's ``prometheus`` package; ``make prometheus``).

:class:`PrometheusServer` scrapes given targets every second with the shipped alerting
rules loaded, listens on a free port of 127.0.0.1, keeps its data in its own folder and
is stopped by its pid. Its HTTP API answers the tests' queries.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from intentwatch.local.kafka_broker import free_port
from intentwatch.local.processes import spawn, stop, tail_file

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
JOB = "intentwatch"
"""The scrape job of the workers, as in ``deploy/prometheus/prometheus.yml`` (rules use it)."""


def tool(name: str) -> str:
    """The path of a Prometheus program; fails saying how to install it when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make prometheus` installs Debian's package")
    return path


class PrometheusServer:
    """A Prometheus process scraping ``targets`` (``host:port``) of job :data:`JOB`."""

    def __init__(self, home: Path, targets: Sequence[str]) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        config = home / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
        }))
        self.log_file = home / "prometheus.log"
        self.process = spawn(
            [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"], self.log_file,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful answer of ``/api/v1/<path>``; fails on an error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's result: labels (without ``__name__``, ``job``, ``instance``)
        → value."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {
            tuple(sorted((k, v) for k, v in series["metric"].items()
                         if k not in ("__name__", "job", "instance"))): float(series["value"][1])
            for series in data["result"]
        }

    def stop(self) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL if it hangs."""
        stop(self.process)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready within 60 s:\n{self.log()}")

    def log(self) -> str:
        """The last lines Prometheus logged."""
        return tail_file(self.log_file)
