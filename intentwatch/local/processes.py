"""Child processes of the local stack: the broker, the Collector, workers, test servers.

Each is started in a process session of its own (Ctrl-C reaches the caller, which stops
it), reads nothing, writes its output to a log file, and is stopped by its pid alone.

>>> import sys, tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> spawn([sys.executable, "-c", "print('up')"], folder / "up.log").wait(30)
0
>>> tail_file(folder / "up.log")
'up\\n'
>>> sleeper = spawn([sys.executable, "-c", "import time; time.sleep(60)"], folder / "sleep.log")
>>> stop(sleeper, timeout=10.0)  # killed by SIGTERM
-15
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["run", "spawn", "stop", "tail", "tail_file", "wait_for"]

T = TypeVar("T")


def run(
    command: Sequence[str],
    error: type[Exception],
    failed: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run ``command`` to its end, its output captured; if it fails, raise ``error``: the
    sentence ``failed``, the exit code and the end of the output.

    >>> import sys
    >>> run([sys.executable, "-c", "print('no room'); raise SystemExit(3)"], RuntimeError,
    ...     "Making room failed")
    Traceback (most recent call last):
    ...
    RuntimeError: Making room failed (exit code 3); its output ends with:
    no room
    """
    result = subprocess.run(list(command), cwd=cwd, env=dict(env) if env is not None else None,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise error(f"{failed} (exit code {result.returncode}); its output ends with:\n"
                    + tail((result.stdout + result.stderr).splitlines()))


def spawn(
    command: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, its stdout and stderr into ``log_file``
    (``env``: its whole environment, else this process's)."""
    with log_file.open("wb") as log:
        return subprocess.Popen(
            list(command), cwd=cwd, env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL if ``process`` still runs after ``timeout`` s; that pid only.
    Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10.0)
    return process.returncode


def tail(lines: Sequence[str], count: int = 30) -> str:
    """The last ``count`` of ``lines``, one a line."""
    return "\n".join(lines[-count:])


def tail_file(path: Path, count: int = 30) -> str:
    """The last ``count`` lines of the file at ``path``."""
    with path.open(errors="replace") as file:
        return "".join(deque(file, maxlen=count))



def wait_for(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Call ``fetch`` until ``done(result)``, every 50 ms; :class:`TimeoutError` saying
    ``what`` after ``timeout`` seconds.

    >>> wait_for(lambda: 3, lambda n: n > 2, 1.0, "three")
    3
    >>> wait_for(lambda: 0, bool, 0.1, "something")
    Traceback (most recent call last):
    ...
    TimeoutError: timed out after 0.1 s waiting for something; last: 0
    """
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; "
                               f"last: {result!r}")
        time.sleep(0.05)
