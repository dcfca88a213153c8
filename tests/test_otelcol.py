"""The local OpenTelemetry Collector: its manifest, its cache, its shipped configuration."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from intentwatch.local import otelcol


def test_the_manifest_is_one_release_line_of_the_collector() -> None:
    modules = re.findall(r"gomod: (\S+) v(\d+)\.(\d+)\.(\d+)", otelcol.MANIFEST.read_text())
    names = {name.rsplit("/", 1)[-1] for name, *_ in modules}
    assert names == {"otlpreceiver", "kafkaexporter", "envprovider", "fileprovider"}
    # v0.x modules share the core's minor version; stable v1.x modules move with it.
    assert {minor for _, major, minor, _ in modules if major == "0"} == {"165"}
    assert {(major, minor) for _, major, minor, _ in modules if major == "1"} == {("1", "71")}
    assert otelcol.OTELCOL_VERSION.startswith("0.165.")
    assert otelcol.BUILDER_VERSION == "0.165.0"


def test_a_built_collector_is_taken_from_the_cache_without_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / f"otelcol-{otelcol.OTELCOL_VERSION}" / "otelcol-intentwatch"
    binary.parent.mkdir()
    binary.write_bytes(b"built before")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    assert otelcol.build(tmp_path) == binary


def test_without_go_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    with pytest.raises(otelcol.CollectorSetupError, match="golang-go"):
        otelcol.build(tmp_path)
    assert not (tmp_path / f"otelcol-{otelcol.OTELCOL_VERSION}" / "otelcol-intentwatch").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)  # a first run builds the Collector; `make test` builds it before
def test_the_built_collector_accepts_the_shipped_configuration() -> None:
    binary = otelcol.build()
    components = subprocess.run([binary, "components"], capture_output=True, text=True,
                                check=True, timeout=60).stdout
    assert "otlpreceiver v0.165.0" in components and "kafkaexporter v0.165.1" in components
    checked = subprocess.run([binary, "validate", "--config", f"file:{otelcol.CONFIG}"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
