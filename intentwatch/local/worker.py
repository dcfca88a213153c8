"""A real ``intentwatch worker`` process for the demo, the benchmarks and the tests.

:meth:`WorkerProcess.start` runs the worker (``python -m intentwatch.pipeline.worker``)
in its own process session with a folder of its own for its data, keys and log, a free
web port on 127.0.0.1 and a fresh app id (consumer group), so several workers can share
one Kafka. :meth:`~WorkerProcess.wait_ready` waits on its web port until it owns
partitions; :meth:`~WorkerProcess.stop` stops that one process by its pid.

Example (needs a running Kafka)::

    worker = WorkerProcess.start(bootstrap, Path("run/worker"),
                                 env={"INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "1"})
    try:
        worker.wait_ready()
        print(worker.status()["received"])
    finally:
        worker.stop()
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from intentwatch.local.kafka_broker import free_port
from intentwatch.local.processes import spawn, stop, tail_file

__all__ = ["WORKER_MODULE", "WorkerError", "WorkerProcess", "is_ready"]

WORKER_MODULE = "intentwatch.pipeline.worker"
"""The module ``python -m`` runs: the same worker as ``intentwatch worker``."""
STATUS_PATH = "/status"


class WorkerError(RuntimeError):
    """The worker exited, or was not ready in time; the message ends with its log's tail."""


def is_ready(status: Mapping[str, Any]) -> bool:
    """Whether a worker's ``/status`` says it owns partitions and has recovered its state.

    >>> is_ready({"ready": True, "partitions": {"intentwatch.toolcalls.v1": [0, 1]}})
    True
    >>> is_ready({"ready": True, "partitions": {}})
    False
    """
    return bool(status.get("ready") and status.get("partitions"))


@dataclass
class WorkerProcess:
    """A worker subprocess; see the module docstring. Built by :meth:`start`."""

    process: subprocess.Popen[bytes]
    url: str
    """Its web server, ``http://127.0.0.1:PORT``."""
    folder: Path
    log_file: Path
    """Its stdout and stderr."""
    started: float = field(default_factory=time.time)
    """Epoch seconds when the process was started."""
    _http: http.client.HTTPConnection | None = field(default=None, init=False, repr=False)

    @classmethod
    def start(
        cls,
        bootstrap: str,
        folder: Path,
        *,
        env: Mapping[str, str] | None = None,
        module: str = WORKER_MODULE,
        profile_to: Path | None = None,
        cwd: Path | None = None,
    ) -> WorkerProcess:
        """Start ``python -m module`` and return at once (see :meth:`wait_ready`).

        The process gets ``INTENTWATCH_BOOTSTRAP`` = ``bootstrap``, a fresh
        ``INTENTWATCH_APP_ID``, a free ``INTENTWATCH_WEB_PORT``, ``INTENTWATCH_DATA_DIR``
        and ``INTENTWATCH_KEYS_DIR`` in ``folder`` and ``INTENTWATCH_LOG_LEVEL=warning``;
        ``env`` adds to or overrides these. Other ``INTENTWATCH_*`` variables of this
        process are not passed on, so the caller alone decides the worker's settings.
        ``profile_to`` runs the worker under cProfile, writing its profile there.
        """
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        settings = {
            "INTENTWATCH_BOOTSTRAP": bootstrap,
            "INTENTWATCH_APP_ID": f"intentwatch-{uuid.uuid4().hex[:8]}",
            "INTENTWATCH_WEB_PORT": str(port),
            "INTENTWATCH_DATA_DIR": str(folder / "data"),
            "INTENTWATCH_KEYS_DIR": str(folder / "keys"),
            "INTENTWATCH_LOG_LEVEL": "warning",
            **(env or {}),
        }
        inherited = {name: value for name, value in os.environ.items()
                     if not name.startswith("INTENTWATCH_")}
        command: Sequence[str] = [sys.executable]
        if profile_to is not None:
            command = [*command, "-m", "cProfile", "-o", str(profile_to)]
        log_file = folder / "worker.log"
        process = spawn([*command, "-m", module], log_file, env={**inherited, **settings},
                        cwd=cwd or folder)
        port = int(settings["INTENTWATCH_WEB_PORT"])
        return cls(process, f"http://127.0.0.1:{port}", folder, log_file)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def jwks_url(self) -> str:
        """Where the worker serves intentwatch's public keys (revocations are signed so)."""
        return f"{self.url}/.well-known/jwks.json"

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, else ``None``."""
        return self.process.poll()

    def alive(self) -> bool:
        return self.returncode is None

    def status(self) -> dict[str, Any]:
        """The worker's ``/status`` (over one kept-alive connection).

        Raises :class:`WorkerError` if the process has exited, :class:`OSError` if its
        web server does not answer (yet).
        """
        self._check_alive()
        if self._http is None:
            address = urlsplit(self.url)
            self._http = http.client.HTTPConnection(address.hostname or "127.0.0.1",
                                                    address.port, timeout=5.0)
        try:
            self._http.request("GET", STATUS_PATH)
            return json.loads(self._http.getresponse().read())
        except (OSError, http.client.HTTPException) as error:
            self._http.close()
            self._http = None
            raise OSError(f"{self.url}{STATUS_PATH}: {error}") from error

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the worker owns partitions and has recovered its state; its status.

        Raises :class:`WorkerError` if it exits or is not ready within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if is_ready(status):
                    return status
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise WorkerError(f"The worker (pid {self.pid}) was not ready within "
                                  f"{timeout:g} s; the end of {self.log_file}:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; only this pid. The exit code."""
        if self._http is not None:
            self._http.close()
            self._http = None
        return stop(self.process, timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the worker's log."""
        return tail_file(self.log_file, lines)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise WorkerError(f"The worker (pid {self.pid}) exited with code "
                              f"{self.process.returncode}; the end of {self.log_file}:\n"
                              f"{self.log_tail()}")
