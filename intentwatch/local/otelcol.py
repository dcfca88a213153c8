"""A minimal OpenTelemetry Collector on this machine, for development and tests.

``otelcol-builder.yaml`` names its modules: the OTLP receiver and the contrib Kafka
exporter, of one release line. The Collector is built once, from the Go module proxy
with the local Go toolchain and the OpenTelemetry Collector Builder, into
``<cache>/otelcol-<version>/`` (``$INTENTWATCH_CACHE``, else ``~/.cache/intentwatch``),
like the Kafka broker's jars; later uses take the binary built then. The first build
downloads about 740 MB of Go modules into Go's module cache and takes 4 to 4.5 minutes
of CPU time (measured on 2 cores).

``otelcol.yaml`` is the Collector configuration intentwatch ships: OTLP in, the Kafka
exporter out, keyed by agent. ``INTENTWATCH_OTLP_GRPC_ENDPOINT`` and
``INTENTWATCH_OTLP_HTTP_ENDPOINT`` (``127.0.0.1:4317``, ``127.0.0.1:4318``),
``INTENTWATCH_BOOTSTRAP``, ``INTENTWATCH_OTLP_TOPIC`` and ``INTENTWATCH_OTLP_ENCODING``
set its receivers, broker, topic and encoding (:func:`start` sets them all)::

    python -m intentwatch.local.otelcol build   # once; prints the binary's path
    python -m intentwatch.local.otelcol run     # the shipped configuration, in the foreground

>>> OTELCOL_VERSION, BUILDER_VERSION
('0.165.1', '0.165.0')
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from intentwatch.local.kafka_broker import _default_cache, free_port
from intentwatch.local.processes import run, spawn, stop, tail_file

__all__ = [
    "BUILDER_VERSION",
    "CONFIG",
    "MANIFEST",
    "OTELCOL_VERSION",
    "CollectorSetupError",
    "LocalCollector",
    "build",
    "start",
]

MANIFEST = Path(__file__).with_name("otelcol-builder.yaml")
"""The OpenTelemetry Collector Builder's manifest: which modules, at which versions."""
CONFIG = Path(__file__).with_name("otelcol.yaml")
"""The Collector configuration intentwatch ships: OTLP receiver → Kafka exporter."""
_BINARY = "otelcol-intentwatch"
_BUILDER = "go.opentelemetry.io/collector/cmd/builder"


def _manifest_version(pattern: str) -> str:
    found = re.search(pattern, MANIFEST.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{MANIFEST} does not match {pattern!r}")
    return found[1]


OTELCOL_VERSION = _manifest_version(r"^  version: (\S+)$")
"""The version of the Collector built here (``dist.version`` of the manifest)."""
BUILDER_VERSION = _manifest_version(r"/receiver/otlpreceiver v(\S+)$")
"""The Collector Builder's version: the core release the manifest's modules are of."""


class CollectorSetupError(RuntimeError):
    """The Collector cannot be built or started; the message says what to do."""


def build(cache: Path | None = None) -> Path:
    """The Collector binary, built on first use into ``<cache>/otelcol-<version>/``.

    The build runs in a temporary folder and the binary is moved into place only when it
    is complete, so an interrupted build is never used. ``GOTOOLCHAIN=local``: the Go on
    ``PATH`` builds it, or says which version it lacks.
    """
    version_dir = (cache or _default_cache()).expanduser().resolve() / f"otelcol-{OTELCOL_VERSION}"
    binary = version_dir / _BINARY
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise CollectorSetupError(
            "Go is needed once to build the local OpenTelemetry Collector from the Go module "
            "proxy: install it with `apt-get install golang-go` (Go 1.26 or newer)."
        )
    print(
        f"Building the OpenTelemetry Collector {OTELCOL_VERSION} into {binary} (first run "
        "only, takes minutes)...", file=sys.stderr, flush=True,
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=version_dir))
    env = {**os.environ, "GOTOOLCHAIN": "local",
           "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -modcacherw".strip()}
    try:
        shutil.copyfile(MANIFEST, work / MANIFEST.name)
        run([go, "run", f"{_BUILDER}@v{BUILDER_VERSION}", "--config", MANIFEST.name],
            CollectorSetupError, f"Building the OpenTelemetry Collector {OTELCOL_VERSION} failed",
            env=env, cwd=work)
        os.replace(work / "build" / _BINARY, binary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


@dataclass(frozen=True)
class LocalCollector:
    """A running Collector with the shipped configuration."""

    process: subprocess.Popen[bytes]
    grpc_endpoint: str
    """OTLP/gRPC ``host:port``."""
    http_endpoint: str
    """OTLP/HTTP base URL, e.g. ``http://127.0.0.1:4318`` (traces at ``/v1/traces``)."""
    log_file: Path

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the Collector flushes its queue), then SIGKILL after ``timeout``."""
        stop(self.process, timeout)


def start(
    bootstrap: str,
    log_file: Path,
    *,
    topic: str = "otlp_spans",
    encoding: str = "otlp_proto",
    cache: Path | None = None,
    timeout: float = 30.0,
) -> LocalCollector:
    """Start the Collector (:data:`CONFIG`) writing spans to ``topic`` on ``bootstrap``, its
    OTLP receivers on free ports of 127.0.0.1; wait until both accept connections."""
    binary = build(cache)
    grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "INTENTWATCH_BOOTSTRAP": bootstrap, "INTENTWATCH_OTLP_TOPIC": topic,
           "INTENTWATCH_OTLP_ENCODING": encoding, "INTENTWATCH_OTLP_GRPC_ENDPOINT": grpc,
           "INTENTWATCH_OTLP_HTTP_ENDPOINT": http}
    process = spawn([str(binary), "--config", f"file:{CONFIG}"], log_file, env=env)
    collector = LocalCollector(process, grpc, f"http://{http}", log_file)
    deadline = time.monotonic() + timeout
    for endpoint in (grpc, http):
        while not _accepts(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                collector.stop()
                why = (f"exited with code {process.returncode}" if process.returncode
                       else f"did not listen on {endpoint} within {timeout:g} s")
                raise CollectorSetupError(
                    f"The OpenTelemetry Collector {why}; the end of {log_file}:\n"
                    + tail_file(log_file)
                )
            time.sleep(0.05)
    return collector


def _accepts(endpoint: str) -> bool:
    host, port = endpoint.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _main(argv: list[str]) -> None:
    command = argv[0] if argv else "run"
    if command not in ("build", "run"):
        raise SystemExit("usage: python -m intentwatch.local.otelcol [build|run]")
    try:
        binary = build()
    except CollectorSetupError as error:
        raise SystemExit(str(error)) from None
    if command == "build":
        print(binary)
        return
    os.execv(binary, [str(binary), "--config", f"file:{CONFIG}"])


if __name__ == "__main__":
    _main(sys.argv[1:])
