"""One demo session: Kafka, a worker, warm-up, live phase, summary, and what is kept.

:func:`run_demo` starts what it needs (a local Kafka unless one is named, a worker
through :mod:`intentwatch.local.worker`), plans the fleet (:mod:`intentwatch.demo.plan`),
runs it (:mod:`intentwatch.demo.run`) and prints the summary
(:mod:`intentwatch.demo.render`). Everything it started is stopped at the end, also on
Ctrl-C, unless ``keep``: then its Kafka and its folder (the telemetry it sent, the
worker's log, keys and learned state) stay for ``intentwatch audit``, ``explain`` and
``replay``, and the demo says how to stop and remove them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from rich.console import Console

from intentwatch.contracts import TOPICS
from intentwatch.demo.plan import plan_fleet
from intentwatch.demo.render import Report, for_cause
from intentwatch.demo.run import (
    CallRecorder,
    RecordingPublisher,
    RevocationBoard,
    VerdictTap,
    feed_history,
    run_live,
    simulated_tool,
)
from intentwatch.local import kafka_broker as localkafka
from intentwatch.local.worker import WorkerError, WorkerProcess
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.topics import TopicSpec
from intentwatch.pipeline.topics import create_topics as create_kafka_topics
from intentwatch.reference import CredentialBroker, ToolGateway
from intentwatch.sdk.publisher import PublishError
from intentwatch.sdk.subscriber import RevocationSubscriber
from intentwatch.simulation.fleet import TOOL_CATALOGUE

__all__ = ["EVENTS_FILE", "DemoError", "create_topics", "run_demo"]

EVENTS_FILE = "events.jsonl"
"""Where a kept demo leaves the telemetry it sent, in the replay format."""


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why."""


def run_demo(
    *,
    bootstrap: str | None = None,
    seed: int | None = None,
    agents: int = 2,
    duration: float = 45.0,
    keep: bool = False,
    port: int | None = None,
    console: Console | None = None,
) -> int:
    """Run the demo and return the exit code (0 done, 1 failed, 130 interrupted).

    ``seed`` picks the simulated fleet and its hijacks (a new one each run when
    ``None``; the demo prints it); ``agents`` is the number of agents per role (six
    roles); ``duration`` the seconds of live traffic; ``keep`` leaves the local Kafka
    and the demo's folder behind; ``port`` is the local Kafka's (default 9092, or a free
    one when 9092 is taken).
    """
    console = console or Console()
    seed = secrets.randbelow(10_000) if seed is None else seed
    folder = _folder(keep)
    previous = _raise_on_sigterm()
    try:
        with contextlib.ExitStack() as kafka_stack:
            console.rule("[bold]intentwatch demo")
            console.print(f"Fleet seed [bold]{seed}[/bold] (`--seed {seed}` runs this fleet again)")
            kafka = None
            if bootstrap is None:
                kafka = _start_kafka(folder / "kafka", port, console)
                kafka_stack.callback(_stop, console, f"Kafka (pid {kafka.pid})",
                                     lambda: localkafka.down(kafka.home))
                bootstrap = kafka.bootstrap
            else:
                console.print(f"Kafka: using [bold]{bootstrap}[/bold]")
            with contextlib.ExitStack() as stack:
                report = _run(stack, console, folder, bootstrap, seed, agents, duration, keep)
            report.print(console)
            if keep:
                kafka_stack.pop_all()  # the broker stays up
                _print_kept(console, folder, bootstrap, kafka, report)
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted: everything the demo started is stopped.[/yellow]")
        shutil.rmtree(folder, ignore_errors=True)
        return 130
    except (DemoError, WorkerError, localkafka.KafkaSetupError, KafkaError,
            PublishError) as error:
        console.print(f"[red]{error}[/red]")
        if any(folder.iterdir()):
            console.print(f"Logs are kept in {folder}.")
        else:
            folder.rmdir()
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def create_topics(bootstrap: str, partitions: int) -> None:
    """Create the intentwatch topics that do not exist yet, with ``partitions`` each,
    before anything publishes (the SDK refuses to publish to a missing topic)."""
    create_kafka_topics(bootstrap, [TopicSpec(name, partitions, 1) for name in TOPICS.values()])


def _folder(keep: bool) -> Path:
    """A new folder for this run: under ``.intentwatch/`` when kept, else a temporary one."""
    if not keep:
        return Path(tempfile.mkdtemp(prefix="intentwatch-demo-"))
    home = Path(os.environ.get("INTENTWATCH_HOME", ".intentwatch"))
    home.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="demo-", dir=home))


def _run(
    stack: contextlib.ExitStack,
    console: Console,
    folder: Path,
    bootstrap: str,
    seed: int,
    agents: int,
    duration: float,
    keep: bool,
) -> Report:
    settings = Settings()
    create_topics(bootstrap, settings.partitions)

    # the warm-up publishes days of history at once: give its batches time on a busy machine
    publisher = RecordingPublisher(bootstrap, client_id="intentwatch-demo", timeout=60.0)
    stack.callback(publisher.close, 10.0)
    broker = CredentialBroker(publisher, issuer="urn:intentwatch:demo-broker")
    jwks_file = folder / "broker-jwks.json"
    jwks_file.write_text(json.dumps(broker.jwks()))
    worker = WorkerProcess.start(bootstrap, folder / "worker", env={
        "INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks_file.resolve()),
        "INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "0",
    })
    stack.callback(_stop, console, f"worker (pid {worker.pid})", worker.stop)
    with console.status("Starting a stream worker..."):
        worker.wait_ready()
    console.print(f"Worker: pid {worker.pid}, JWKS at {worker.jwks_url}")

    history, tasks = plan_fleet(seed, agents, duration, now=time.time())
    feed_history(publisher, worker, history, broker, console)

    board = RevocationBoard({task.task_id for task in tasks})
    subscriber = RevocationSubscriber(
        bootstrap, jwks=worker.jwks_url, audience=settings.audience, issuer=settings.issuer)
    broker.follow(subscriber, on_revocation=board.add)
    stack.callback(broker.close)
    verdicts = stack.enter_context(VerdictTap(bootstrap))
    recorder = CallRecorder()
    gateway = ToolGateway(broker, publisher, on_call=recorder.add)
    for spec in TOOL_CATALOGUE.values():
        gateway.register(spec.name, simulated_tool, action=spec.action,
                         description=spec.description, target_arg="target",
                         data_labels=lambda arguments: arguments["labels"])

    results = run_live(tasks, broker, gateway, publisher, recorder, verdicts, board, duration,
                       console)
    calls = [attempt.call for result in results for attempt in result.attempts]
    verdicts.wait_for({call.event_id for call in calls if call.event_id}, timeout=10.0)
    time.sleep(1.0)  # the last task-end revocations
    if keep:
        publisher.write(folder / EVENTS_FILE)
    return Report(results, board.received(), verdicts.decisions(), worker.status())


def _start_kafka(home: Path, port: int | None, console: Console) -> localkafka.LocalKafka:
    """A local broker on ``port``, else on 9092, or on a free port when 9092 is taken."""
    if port is None:
        port = 9092 if localkafka.port_is_free(9092) else localkafka.free_port()
    with console.status(f"Starting a local Kafka on 127.0.0.1:{port}..."):
        kafka = localkafka.up(port, home=home)
    console.print(f"Kafka: started [bold]{kafka.bootstrap}[/bold] (pid {kafka.pid})")
    return kafka


def _stop(console: Console, what: str, stop: Any) -> None:
    console.print(f"Stopping {what}.")
    stop()


def _print_kept(console: Console, folder: Path, bootstrap: str,
                kafka: localkafka.LocalKafka | None, report: Report) -> None:
    """Say what ``--keep`` left running and on disk, what to try, and how to stop it."""
    console.rule("[bold]Kept (--keep)")
    if kafka is not None:
        console.print(f"Kafka keeps running at [bold]{bootstrap}[/bold] (pid {kafka.pid}), "
                      f"its data in {folder / 'kafka'}.")
    console.print(f"In {folder}: {EVENTS_FILE} (the telemetry the demo sent, replay format), "
                  "worker/ (the worker's log, keys and learned state).")
    console.print("Look around:")
    console.print(f"  intentwatch audit --bootstrap {bootstrap}")
    revoked = for_cause(report.revocations)
    if revoked:
        console.print(f"  # a task revoked for cause: {revoked[0][1].task_id}")
    console.print(f"  intentwatch replay {folder / EVENTS_FILE} --out {folder / 'verdicts.jsonl'}")
    console.print("When done:")
    stop = f"intentwatch kafka down --home {folder / 'kafka'} && " if kafka else ""
    console.print(f"  {stop}rm -r {folder}")


def _raise_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt, so the demo cleans up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
