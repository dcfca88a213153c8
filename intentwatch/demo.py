"""``intentwatch demo``: the whole loop on a real Kafka, in about a minute.

1. **Kafka**: the one named by ``--bootstrap`` (or ``$INTENTWATCH_BOOTSTRAP``), else a
   local broker started for the demo on port 9092 (a free port if 9092 is taken).
2. **Worker**: ``python -m intentwatch.pipeline.worker``, trusting the grant key of the reference
   credential broker; signed grants only.
3. **Warm-up**: days of benign history of a simulated fleet (:mod:`intentwatch.simulation.fleet`),
   fed at the pace the worker takes it, so every agent has a learned baseline.
4. **Live**: each agent runs one task through the reference credential broker and tool
   gateway (:mod:`intentwatch.reference`); some tasks are hijacked. Revocations appear as
   they reach the broker, and the gateway denies the revoked tasks' next calls.
5. **Summary**: calls, verdicts, revocations, latencies, and what each attacker got done
   before the cut.

Everything the demo starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from intentwatch.contracts import TOPICS, Revocation, Verdict, format_ts
from intentwatch.local import kafka_broker as localkafka
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.topics import TopicSpec
from intentwatch.pipeline.topics import create_topics as create_kafka_topics
from intentwatch.reference import AccessDenied, CredentialBroker, GatewayCall, ToolGateway
from intentwatch.sdk.publisher import PublishError, TelemetryPublisher
from intentwatch.sdk.subscriber import RevocationSubscriber
from intentwatch.simulation.fleet import TOOL_CATALOGUE, FleetSpec, generate
from intentwatch.tokens.grants import sign_grant

__all__ = ["DemoError", "WorkerProcess", "create_topics", "run_demo"]

LIVE_ATTACKS = (
    "out_of_grant", "exfil_new_domain", "export_new_recipient", "privilege_change",
    "destructive_delete", "lateral_chain", "volume_creep", "use_after_task_end",
)
"""Hijacks the live phase stages, first one always (it breaks the grant by construction)."""
HISTORY_TASKS = 250
"""About how many benign history tasks the warm-up feeds (20-40 s, with the worker's pace)."""
MAX_GAP = 3.0
"""Longest pause, in seconds, between two live calls of an agent (think time is capped)."""
GIVE_UP_AFTER = 3
"""Denied calls in a row after which a live agent stops its task."""
LIFECYCLE = ("task_completed", "ttl_expired")
"""Revocation reasons that end a task normally rather than cut it for cause."""


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why."""


def run_demo(
    *,
    bootstrap: str | None = None,
    seed: int = 7,
    agents: int = 2,
    duration: float = 45.0,
    console: Console | None = None,
) -> int:
    """Run the demo and return the exit code (0 done, 1 failed, 130 interrupted).

    ``agents`` is the number of agents per role (six roles); ``duration`` the seconds of
    live traffic.
    """
    console = console or Console()
    folder = Path(tempfile.mkdtemp(prefix="intentwatch-demo-"))
    previous = _raise_on_sigterm()
    try:
        with contextlib.ExitStack() as stack:
            report = _run(stack, console, folder, bootstrap, seed, agents, duration)
        report.print(console)
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted: everything the demo started is stopped.[/yellow]")
        shutil.rmtree(folder, ignore_errors=True)
        return 130
    except (DemoError, localkafka.KafkaSetupError, KafkaError, PublishError) as error:
        console.print(f"[red]{error}[/red]")
        if any(folder.iterdir()):
            console.print(f"Logs are kept in {folder}.")
        else:
            folder.rmdir()
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def _run(
    stack: contextlib.ExitStack,
    console: Console,
    folder: Path,
    bootstrap: str | None,
    seed: int,
    agents: int,
    duration: float,
) -> Report:
    console.rule("[bold]intentwatch demo")
    if bootstrap is None:
        bootstrap = _start_kafka(folder / "kafka", console, stack)
    else:
        console.print(f"Kafka: using [bold]{bootstrap}[/bold]")
    settings = Settings()
    create_topics(bootstrap, settings.partitions)

    publisher = TelemetryPublisher(bootstrap, client_id="intentwatch-demo")
    stack.callback(publisher.close, 10.0)
    broker = CredentialBroker(publisher, issuer="urn:intentwatch:demo-broker")
    jwks_file = folder / "broker-jwks.json"
    jwks_file.write_text(json.dumps(broker.jwks()))
    worker = WorkerProcess.start(bootstrap, folder / "worker", grant_issuers_jwks=jwks_file)
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
    return Report(results, board.received(), verdicts.decisions(), worker.status())


# -- Kafka and the worker ----------------------------------------------------------------


def _start_kafka(home: Path, console: Console, stack: contextlib.ExitStack) -> str:
    port = 9092 if localkafka.port_is_free(9092) else localkafka.free_port()
    with console.status(f"Starting a local Kafka on 127.0.0.1:{port}..."):
        kafka = localkafka.up(port, home=home)
    stack.callback(_stop, console, f"Kafka (pid {kafka.pid})", lambda: localkafka.down(home))
    console.print(f"Kafka: started [bold]{kafka.bootstrap}[/bold] (pid {kafka.pid})")
    return kafka.bootstrap


def _stop(console: Console, what: str, stop: Any) -> None:
    console.print(f"Stopping {what}.")
    stop()


def create_topics(bootstrap: str, partitions: int) -> None:
    """Create the intentwatch topics that do not exist yet, with ``partitions`` each,
    before anything publishes (the SDK refuses to publish to a missing topic)."""
    create_kafka_topics(bootstrap, [TopicSpec(name, partitions, 1) for name in TOPICS.values()])


@dataclass
class WorkerProcess:
    """A stream worker subprocess (``python -m intentwatch.pipeline.worker``) with its own folder.

    Its keyring, data and log live in ``folder``; it gets a free web port and a fresh
    app id (consumer group), so several can share a Kafka. Stop it with :meth:`stop`.
    """

    process: subprocess.Popen[bytes]
    port: int
    log_file: Path
    _http: http.client.HTTPConnection | None = field(default=None, init=False, repr=False)

    @classmethod
    def start(
        cls,
        bootstrap: str,
        folder: Path,
        *,
        grant_issuers_jwks: Path,
    ) -> WorkerProcess:
        """Start the worker, trusting the grant issuers of ``grant_issuers_jwks``.

        Returns at once (see :meth:`wait_ready`). Unsigned grants are refused.
        """
        folder.mkdir(parents=True, exist_ok=True)
        port = localkafka.free_port()
        settings = {
            "INTENTWATCH_BOOTSTRAP": bootstrap,
            "INTENTWATCH_APP_ID": f"intentwatch-{uuid.uuid4().hex[:8]}",
            "INTENTWATCH_WEB_PORT": str(port),
            "INTENTWATCH_DATA_DIR": str(folder / "data"),
            "INTENTWATCH_KEYS_DIR": str(folder / "keys"),
            "INTENTWATCH_GRANT_ISSUERS_JWKS": str(grant_issuers_jwks),
            "INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "0",
            "INTENTWATCH_LOG_LEVEL": "warning",
        }
        log_file = folder / "worker.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "intentwatch.pipeline.worker"],
                env={**os.environ, **settings},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the worker
            )
        return cls(process, port, log_file)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def jwks_url(self) -> str:
        """Where the worker serves intentwatch's public keys."""
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def status(self) -> dict[str, Any]:
        """The worker's ``/status`` counters (over one kept-alive connection)."""
        self._check_alive()
        if self._http is None:
            self._http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        try:
            self._http.request("GET", "/status")
            return json.loads(self._http.getresponse().read())
        except (OSError, http.client.HTTPException):
            self._http.close()
            self._http = None
            raise

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the worker owns partitions and has recovered its state."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                status = self.status()
                if status["ready"] and status["partitions"]:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"The worker was not ready within {timeout:g} s; the end of "
                                f"{self.log_file}:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        if self._http is not None:
            self._http.close()
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        with self.log_file.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(f"The worker exited with code {self.process.returncode}; the end "
                            f"of {self.log_file}:\n{self.log_tail()}")


# -- the fleet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One planned tool call of a live task, as the fleet recorded it."""

    gap: float
    """Seconds since the previous call (or the task's start)."""
    tool: str
    target: str | None
    labels: list[str]
    bytes_out: int
    bytes_in: int
    fails: bool
    attack: bool
    after_end: bool
    """Made after the task ended (a hijacked agent keeps using its credential)."""


@dataclass(frozen=True)
class LiveTask:
    """A task one agent runs live through the broker and gateway."""

    agent_id: str
    task_id: str
    grant: dict[str, Any]
    status: str
    steps: list[Step]
    attack: str | None

    @property
    def length(self) -> float:
        return sum(min(step.gap, MAX_GAP) for step in self.steps)


def plan_fleet(
    seed: int, agents_per_role: int, duration: float, *, now: float
) -> tuple[list[dict[str, Any]], list[LiveTask]]:
    """Benign history ending at ``now`` and one live task per agent (some hijacked).

    The fleet is simulated up to ``now`` and two days on: the tasks that end before
    ``now`` are history; the tasks that start after it are scripts for the live phase.
    """
    roles = 6
    days = float(np.clip(HISTORY_TASKS / (roles * agents_per_role * 6.0), 2.0, 7.0))
    start = datetime.fromtimestamp(now, UTC) - timedelta(days=days)
    events = generate(FleetSpec(seed=seed, agents_per_role=agents_per_role, history_days=days,
                                attack_days=2.0, attack_rate=0.5, start=start))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_task.setdefault(event["task_id"], []).append(event)
    cut = format_ts(now)
    done = {task_id for task_id, task in by_task.items() if max(map(_time, task)) < cut}
    history = sorted((event for event in events if event["task_id"] in done), key=_feed_order(
        events))
    live = [_live_task(task) for task in by_task.values() if min(map(_time, task)) >= cut]
    return history, _choose(live, duration, np.random.default_rng(seed))


def _time(event: dict[str, Any]) -> str:
    return event.get("ts") or event["issued_at"]


def _feed_order(events: list[dict[str, Any]]) -> Any:
    """Sort key: time order, but a task's grant right after its start (see :func:`feed_history`)."""
    starts = {e["task_id"]: e["ts"] for e in events if e.get("status") == "started"}

    def key(event: dict[str, Any]) -> tuple[str, int]:
        if event["kind"] == "grant":
            return starts[event["task_id"]], 1
        return event["ts"], 0 if event.get("status") == "started" else 2

    return key


def _live_task(events: list[dict[str, Any]]) -> LiveTask:
    grant = next(e for e in events if e["kind"] == "grant")
    started = next(e for e in events if e["kind"] == "task" and e["status"] == "started")
    ended = next(e for e in events if e["kind"] == "task" and e["status"] != "started")
    previous = _epoch(started["ts"])
    steps = []
    for call in sorted((e for e in events if e["kind"] == "toolcall"), key=_time):
        ts = _epoch(call["ts"])
        steps.append(Step(
            gap=ts - previous, tool=call["tool"], target=call.get("target"),
            labels=call.get("data_labels", []), bytes_out=call.get("bytes_out") or 0,
            bytes_in=call.get("bytes_in") or 0, fails=call.get("outcome") == "error",
            attack=call["truth"]["attack"], after_end=call["ts"] > ended["ts"]))
        previous = ts
    attack = started["truth"]["attack_type"]
    return LiveTask(grant["agent_id"], f"{grant['task_id']}-{uuid.uuid4().hex[:6]}", grant,
                    ended["status"], steps, attack)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _choose(tasks: list[LiveTask], duration: float, rng: np.random.Generator) -> list[LiveTask]:
    """One task per agent: a third hijacked, of distinct kinds, the rest benign.

    Of each kind the hijack with the most attack calls after its first is taken, so
    there is something left to cut off.
    """
    budget = max(10.0, duration - 8.0)
    fits = [task for task in tasks if task.length <= budget]
    agents = sorted({task.agent_id for task in tasks})
    kinds = [LIVE_ATTACKS[0], *rng.permutation(LIVE_ATTACKS[1:])]
    chosen: dict[str, LiveTask] = {}
    for kind in kinds:
        if len(chosen) >= max(2, round(len(agents) / 3)):
            break
        candidates = [t for t in fits if t.attack == kind and t.agent_id not in chosen]
        if candidates:
            task = max(candidates, key=lambda t: (sum(step.attack for step in t.steps), -t.length))
            chosen[task.agent_id] = task
    for agent in agents:
        benign = [t for t in fits if t.agent_id == agent and t.attack is None
                  and t.status == "completed"]
        if agent not in chosen and benign:
            chosen[agent] = benign[int(rng.integers(len(benign)))]
    return sorted(chosen.values(), key=lambda task: task.agent_id)


# -- warm-up -----------------------------------------------------------------------------


def feed_history(
    publisher: TelemetryPublisher,
    worker: WorkerProcess,
    history: list[dict[str, Any]],
    broker: CredentialBroker,
    console: Console,
) -> None:
    """Publish ``history`` (grants signed by the broker) and wait until the worker has read it.

    Each agent's grants, task events and calls share one log, so publishing them in
    order is all the order the worker needs.
    """
    sent: Counter[str] = Counter()
    agents = len({event["agent_id"] for event in history})
    tasks = sum(1 for event in history if event["kind"] == "grant")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    with progress:
        bar = progress.add_task(f"Warm-up: {tasks} benign tasks of {agents} agents",
                                total=len(history))
        for event in history:
            kind = event["kind"]
            record = {name: value for name, value in event.items() if name != "kind"}
            if kind == "grant":
                publisher.publish_grant(sign_grant(record, broker.key))
            elif kind == "toolcall":
                publisher.publish_toolcall(record)
            else:
                publisher.publish_task_event(record)
            sent[kind] += 1
            progress.advance(bar)
        publisher.flush()
        while any(worker.status()["received"].get(kind, 0) < count
                  for kind, count in sent.items()):
            time.sleep(0.05)


# -- live --------------------------------------------------------------------------------


class SimulatedToolError(RuntimeError):
    """A simulated backend failed, as the fleet recorded."""


def simulated_tool(
    target: str | None, labels: list[str], payload: str, reply_bytes: int, fails: bool
) -> bytes:
    """Stand-in for every fleet tool: takes the call's payload, answers with the recorded size.

    ``labels`` are the classification of the data the call touches, as the real backend
    would report it.
    """
    if fails:
        raise SimulatedToolError(f"backend for {target} failed")
    return b"." * reply_bytes


@dataclass(frozen=True)
class Attempt:
    call: GatewayCall
    attack: bool


@dataclass
class TaskResult:
    task: LiveTask
    attempts: list[Attempt] = field(default_factory=list)


class CallRecorder:
    """Keeps every gateway call, and the last one of each thread."""

    def __init__(self) -> None:
        self.calls: list[GatewayCall] = []
        self._local = threading.local()

    def add(self, call: GatewayCall) -> None:
        self.calls.append(call)
        self._local.last = call

    def last(self) -> GatewayCall:
        return self._local.last


def run_live(
    tasks: list[LiveTask],
    broker: CredentialBroker,
    gateway: ToolGateway,
    publisher: TelemetryPublisher,
    recorder: CallRecorder,
    verdicts: VerdictTap,
    board: RevocationBoard,
    duration: float,
    console: Console,
) -> list[TaskResult]:
    """Run every task in its own thread for at most ``duration`` seconds, showing revocations."""
    stop = threading.Event()
    deadline = time.monotonic() + duration
    results = [TaskResult(task) for task in tasks]
    stagger = min(5.0, duration / 4) / max(1, len(tasks))
    threads = [
        threading.Thread(
            target=_agent, name=f"agent-{n}", daemon=True,
            args=(result, n * stagger, deadline, stop, broker, gateway, publisher, recorder,
                  verdicts),
        )
        for n, result in enumerate(results)
    ]
    attackers = sum(task.attack is not None for task in tasks)
    console.print(f"Live: {len(tasks)} agents run one task each for up to {duration:g} s; "
                  f"{attackers} of the tasks are hijacked.")
    try:
        with Live(get_renderable=lambda: board.render(recorder.calls, deadline),
                  console=console, refresh_per_second=8):
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(2.0)
    console.print()
    return results


def _agent(
    result: TaskResult,
    delay: float,
    deadline: float,
    stop: threading.Event,
    broker: CredentialBroker,
    gateway: ToolGateway,
    publisher: TelemetryPublisher,
    recorder: CallRecorder,
    verdicts: VerdictTap,
) -> None:
    task = result.task
    if stop.wait(delay):
        return
    credential = broker.issue(
        task.agent_id, task.task_id, intent=task.grant["intent"], tools=task.grant["tools"],
        targets=task.grant["targets"], data_labels=task.grant["data_labels"],
        ttl=_epoch(task.grant["expires_at"]) - _epoch(task.grant["issued_at"]))
    head = {"agent_id": task.agent_id, "task_id": task.task_id}
    publisher.publish_task_event({**head, "status": "started"})

    def end(status: str) -> None:
        # The worker reads task events and calls from separate topics, and takes a call
        # it reads after the task's end for credential reuse, however early the call was
        # made: the runner ends a task once the worker has judged its calls.
        verdicts.wait_for({a.call.event_id for a in result.attempts if a.call.event_id}, 10.0)
        publisher.publish_task_event({**head, "status": status})

    ended, denied = False, 0
    for step in task.steps:
        if step.after_end and not ended:
            end(task.status)
            ended = True
        if stop.wait(min(step.gap, MAX_GAP)) or time.monotonic() > deadline:
            break
        try:
            gateway.call(credential.token, step.tool, target=step.target, labels=step.labels,
                         payload="x" * step.bytes_out, reply_bytes=step.bytes_in,
                         fails=step.fails)
            denied = 0
        except AccessDenied:
            denied += 1
        except SimulatedToolError:
            denied = 0
        result.attempts.append(Attempt(recorder.last(), step.attack))
        if denied >= GIVE_UP_AFTER:
            break
    if not ended:
        cut_short = len(result.attempts) < len(task.steps) and denied < GIVE_UP_AFTER
        end("cancelled" if cut_short else task.status)


# -- revocations and verdicts ------------------------------------------------------------


class RevocationBoard:
    """Revocations of the live tasks as they reach the broker, rendered as a table."""

    def __init__(self, task_ids: set[str]) -> None:
        self.task_ids = task_ids
        self._rows: list[tuple[float, Revocation]] = []
        self._lock = threading.Lock()

    def add(self, revocation: Revocation) -> None:
        if revocation.task_id in self.task_ids:
            with self._lock:
                self._rows.append((time.time(), revocation))

    def received(self) -> list[tuple[float, Revocation]]:
        with self._lock:
            return list(self._rows)

    def render(self, calls: list[GatewayCall], deadline: float) -> Group:
        rows = self.received()
        outcomes = Counter(call.outcome for call in calls)
        left = max(0.0, deadline - time.monotonic())
        status = Text.assemble(
            ("Live ", "bold"), f"{left:4.0f} s left   calls {len(calls)}: ",
            (f"{outcomes['ok']} ok", "green"), ", ", (f"{outcomes['error']} error", "yellow"),
            ", ", (f"{outcomes['denied']} denied", "red"), f"   revocations {len(rows)}")
        table = Table(title="Revocations received by the credential broker", expand=True)
        for name, style in (("time (UTC)", "dim"), ("agent", "cyan"), ("task", ""),
                            ("reason", "bold"), ("score", ""), ("why", "")):
            table.add_column(name, style=style, no_wrap=name != "why", overflow="ellipsis")
        for_cause = [row for row in rows if row[1].reason_code not in LIFECYCLE]
        lifecycle = [row for row in rows if row[1].reason_code in LIFECYCLE]
        shown = sorted(for_cause + lifecycle[len(lifecycle) - max(0, 14 - len(for_cause)):],
                       key=lambda row: row[0])
        for received_at, revocation in shown:
            code = revocation.reason_code
            table.add_row(
                format_ts(received_at)[11:23], _short_agent(revocation.agent_id),
                revocation.task_id[:16], Text(code, style=_REASON_STYLE.get(code, "")),
                f"{revocation.score:.2f}", revocation.reason,
                style="dim" if code in LIFECYCLE else None)
        return Group(status, table)


_REASON_STYLE = {"intent_violation": "red", "anomaly": "magenta", "credential_reuse": "yellow",
                 "policy": "yellow", "task_completed": "dim", "ttl_expired": "dim"}


def _short_agent(agent_id: str) -> str:
    return agent_id.removeprefix("spiffe://").split("/agents/", 1)[-1]


class VerdictTap:
    """Reads verdicts from the end of the topic on, in a background thread."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       fetch_max_wait_ms=100, client_id="intentwatch-demo")
        topic = TOPICS["verdicts"]
        partitions = [TopicPartition(topic, p)
                      for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end()
        for partition in partitions:
            self._consumer.position(partition)
        self._decisions: dict[str, str] = {}
        self._stop = threading.Event()
        self._decoder = msgspec.json.Decoder(Verdict)
        self._thread = threading.Thread(target=self._loop, name="verdicts", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    verdict = self._decoder.decode(record.value)
                    self._decisions[verdict.event_id] = verdict.decision

    def decisions(self) -> dict[str, str]:
        return dict(self._decisions)

    def wait_for(self, event_ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not event_ids <= self._decisions.keys() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._consumer.close()

    def __enter__(self) -> VerdictTap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- summary -----------------------------------------------------------------------------


@dataclass
class Report:
    """What the live phase did, and how fast the loop closed."""

    results: list[TaskResult]
    revocations: list[tuple[float, Revocation]]
    decisions: dict[str, str]
    worker_status: dict[str, Any]

    def print(self, console: Console) -> None:
        calls = [a.call for r in self.results for a in r.attempts]
        outcomes = Counter(call.outcome for call in calls)
        by_event = {call.event_id: call for call in calls}
        verdicts = Counter(self.decisions[call.event_id] for call in calls
                           if call.event_id in self.decisions)
        reasons = Counter(rev.reason_code for _, rev in self.revocations)

        console.rule("[bold]Summary")
        console.print(
            f"Tool calls through the gateway: {len(calls)} ({outcomes['ok']} ok, "
            f"{outcomes['error']} error, {outcomes['denied']} denied before running)")
        console.print(f"Verdicts by decision: {_counts(verdicts)} "
                      f"({sum(verdicts.values())} of {len(calls)} calls judged)")
        console.print(f"Revocations by reason: {_counts(reasons)}")

        cut = self._cut_times(by_event)
        to_revocation = [revoked - call.started for call, revoked, _ in cut.values()]
        to_denial = [denied - call.started for call, _, denied in cut.values() if denied]
        console.print()
        console.print("[bold]Measured[/bold] (wall clock, one sample per task revoked for cause)")
        console.print("  violating call -> revocation at the broker:    "
                      + _percentiles(to_revocation))
        console.print("  violating call -> first denial at the gateway: " + _percentiles(to_denial))
        console.print("  [dim](the second includes the agent's pause before its next call)[/dim]")
        console.print(self._attack_table(cut))
        late = [call for call in calls if call.task_id in cut and call.outcome != "denied"
                and call.started > cut[call.task_id][1]]
        console.print(f"Calls of revoked tasks that ran after the revocation reached the broker: "
                      f"{len(late)}")
        benign = [r for r in self.results if r.task.attack is None]
        false_cuts = [r for r in benign if r.task.task_id in cut]
        console.print(f"Benign tasks: {len(benign)}; revoked for cause (false positives): "
                      f"{len(false_cuts)}.")
        published = self.worker_status.get("published", {})
        dead = {k: v for k, v in published.items() if k.startswith("dlq.")}
        if dead:
            console.print(f"[yellow]Dead letters at the worker (warm-up included): "
                          f"{_counts(Counter(dead))}[/yellow]")

    def _cut_times(
        self, by_event: dict[str | None, GatewayCall]
    ) -> dict[str, tuple[GatewayCall, float, float | None]]:
        """Task id -> (violating call, revocation received at, first denial answered at),
        for the tasks revoked for a call that ran (not one the gateway had denied)."""
        cut: dict[str, tuple[GatewayCall, float, float | None]] = {}
        for received_at, rev in self.revocations:
            trigger = next((by_event[e] for e in rev.evidence if e in by_event), None)
            if (rev.reason_code in LIFECYCLE or trigger is None or trigger.outcome == "denied"
                    or rev.task_id in cut):
                continue
            denials = [call.started + call.duration for call in by_event.values()
                       if call.task_id == rev.task_id and call.outcome == "denied"
                       and call.started > trigger.started]
            cut[rev.task_id] = (trigger, received_at, min(denials, default=None))
        return cut

    def _attack_table(self, cut: dict[str, tuple[GatewayCall, float, float | None]]) -> Table:
        table = Table(title="Hijacked tasks", expand=False)
        for name in ("agent", "attack", "attack calls", "ran", "ran after the violating call",
                     "denied", "revoked (reason, after)"):
            table.add_column(name)
        for result in self.results:
            if result.task.attack is None:
                continue
            attacks = [a.call for a in result.attempts if a.attack]
            ran = [c for c in attacks if c.outcome != "denied"]
            entry = cut.get(result.task.task_id)
            after = [c for c in ran if entry and c.started > entry[0].started]
            revocations = [rev for _, rev in self.revocations
                           if rev.task_id == result.task.task_id]
            revocation = next((rev for rev in revocations if rev.reason_code not in LIFECYCLE),
                              revocations[0] if revocations else None)
            revoked = "no"
            if entry is not None and revocation is not None:
                latency = 1000 * (entry[1] - entry[0].started)
                revoked = f"{revocation.reason_code}, {latency:.0f} ms"
            elif revocation is not None:
                revoked = revocation.reason_code
            table.add_row(_short_agent(result.task.agent_id), result.task.attack,
                          str(len(attacks)), str(len(ran)), str(len(after)),
                          str(len(attacks) - len(ran)), revoked)
        return table


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "none"


def _percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "no sample"
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return f"p50 {p50:6.0f} ms   p99 {p99:6.0f} ms   (n={len(seconds)})"


def _raise_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt, so the demo cleans up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
