"""Running the demo: the warm-up feed, the live agents, and what they see come back.

:func:`feed_history` publishes the planned history at the pace the worker takes it;
:func:`run_live` runs every :class:`~intentwatch.demo.plan.LiveTask` in its own thread
through the reference credential broker and tool gateway (:mod:`intentwatch.reference`)
while the revocations reaching the broker are collected on a :class:`RevocationBoard`
and verdicts read by a :class:`VerdictTap`. A :class:`RecordingPublisher` keeps the
telemetry it sends, in the replay format, for ``intentwatch replay`` afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from intentwatch.contracts import TOPICS, Grant, Revocation, TaskEvent, ToolCall, Verdict
from intentwatch.demo.plan import MAX_GAP, LiveTask, epoch
from intentwatch.demo.render import render_live
from intentwatch.local.worker import WorkerProcess
from intentwatch.reference import AccessDenied, CredentialBroker, GatewayCall, ToolGateway
from intentwatch.sdk.publisher import TelemetryPublisher
from intentwatch.tokens.grants import sign_grant

__all__ = [
    "GIVE_UP_AFTER", "Attempt", "CallRecorder", "RecordingPublisher", "RevocationBoard",
    "TaskResult", "VerdictTap", "feed_history", "run_live", "simulated_tool",
]

GIVE_UP_AFTER = 3
"""Denied calls in a row after which a live agent stops its task."""


class RecordingPublisher(TelemetryPublisher):
    """A :class:`TelemetryPublisher` that also keeps what it sent, in the replay format."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def publish_toolcall(self, call: ToolCall | Any) -> ToolCall:
        return self._keep("toolcall", super().publish_toolcall(call))

    def publish_task_event(self, event: TaskEvent | Any) -> TaskEvent:
        return self._keep("task", super().publish_task_event(event))

    def publish_grant(self, grant: str | Grant | Any) -> Grant:
        return self._keep("grant", super().publish_grant(grant))

    def write(self, path: Path) -> int:
        """Write the records sent so far as JSON Lines; returns how many."""
        with self._lock:
            records = list(self._records)
        with path.open("w", encoding="utf-8") as sink:
            for record in records:
                sink.write(json.dumps(record, separators=(",", ":")) + "\n")
        return len(records)

    def _keep(self, kind: str, record: Any) -> Any:
        with self._lock:
            self._records.append({"kind": kind, **msgspec.to_builtins(record)})
        return record


def feed_history(
    publisher: TelemetryPublisher,
    worker: WorkerProcess,
    history: list[dict[str, Any]],
    broker: CredentialBroker,
    console: Console,
) -> None:
    """Publish ``history`` (grants signed by the broker) and wait until the worker has read it.

    Each agent's grants, task events and calls share one log, so publishing them in
    order is all the order the worker needs. The worker judges a grant's validity no
    earlier than the time it was published, so the broker signs the history's grants
    valid until an hour from now (their tasks end long before).
    """
    sent: Counter[str] = Counter()
    valid_until = time.time() + 3600.0
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
                publisher.publish_grant(sign_grant({**record, "expires_at": valid_until},
                                                   broker.key))
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
        with Live(get_renderable=lambda: render_live(board.received(), recorder.calls, deadline),
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
        ttl=epoch(task.grant["expires_at"]) - epoch(task.grant["issued_at"]))
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
    """Revocations of the live tasks as they reach the broker, with when they did."""

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


