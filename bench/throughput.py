"""Throughput of intentwatch, side by side on one machine and one local Kafka broker.

1. **engine**: ``Engine`` over a generated fleet, in process, no Kafka (the ceiling);
   also what each step of the worker costs without Kafka (decode, engine, encode, sign).
2. **bare stream**: :mod:`bench.bare_stream`, a faust agent that forwards raw records.
3. **intentwatch worker**: ``python -m intentwatch.pipeline.worker`` over the same fleet.

Both stream runs get the same records, pre-loaded (keyed by agent id) before their
worker starts, so processing is measured, not producing. The rate is the input count
over the window from the first to the last output record, timed by the broker
(``LogAppendTime``), i.e. from the first processed record to the last verdict. The
worker's CPU time (``/proc``) per input record is reported beside it: the machine may be
shared, and CPU per record does not depend on what else runs. Each worker is a
subprocess (:class:`intentwatch.local.worker.WorkerProcess`) with its own app id, web port
and data dir, stopped by its pid. Grants are
plain JSON (``INTENTWATCH_ALLOW_UNSIGNED_GRANTS=1``), valid over the whole run unless
``--grants-as-generated``. ``--profile`` adds cProfile summaries of the engine and of one
more run of each worker.

Run ``python -m bench.throughput --help``; results go to ``bench/results/throughput.json``.
The benchmark reports; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from intentwatch.contracts import DLQ_HEADERS, TOPICS, Event, decode_replay_record, encode
from intentwatch.local import kafka_broker as localkafka
from intentwatch.local.worker import WorkerProcess
from intentwatch.models.engine import Engine, Outcome
from intentwatch.models.replay import event_time, replay
from intentwatch.pipeline.decoding import Decoder
from intentwatch.simulation.fleet import FleetSpec, generate
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import encode_revocation

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "throughput.json"
PACKAGES = ("faust-streaming", "mode-streaming", "aiokafka", "kafka-python", "msgspec", "river")
OUTPUT_TOPICS = ("verdicts", "revocations", "audit", "dlq")
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}
_NOT_ON_WIRE = ("kind", "truth")

console = Console(width=None if sys.stdout.isatty() else 160)


# -- workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One input record as it goes onto Kafka."""

    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Workload:
    """A generated fleet: replay records and the same records as Kafka messages."""

    spec: dict[str, Any]
    records: list[dict[str, Any]]
    messages: list[Message]
    kinds: dict[str, int]

    @property
    def calls(self) -> int:
        return self.kinds.get("toolcall", 0)

    def head(self, count: int) -> Workload:
        """The first ``count`` records only."""
        records = self.records[:count]
        kinds = Counter(record["kind"] for record in records)
        return Workload({**self.spec, "limit": count}, records, self.messages[:count], dict(kinds))


def make_workload(spec: FleetSpec, limit: int | None, *, widen_grants: bool) -> Workload:
    """The fleet of ``spec`` (its first ``limit`` records); values without ``kind``/``truth``.

    ``widen_grants`` makes every grant valid until a day after now (issued when it was).
    The worker verifies a grant when its record was published, so on a pre-loaded
    backlog of history most generated grants would be dead-lettered as expired, and the
    run would measure the DLQ path instead of the normal one.
    """
    records = generate(spec)
    if limit is not None:
        records = records[:limit]
    if widen_grants and records:
        times = [event_time(decode_replay_record(record)) for record in records]
        until = {"expires_at": max(*times, time.time()) + 86400.0}
        records = [{**record, **until} if record["kind"] == "grant" else record
                   for record in records]
    messages = [
        Message(
            TOPICS["events"],  # the worker tells the kinds apart by their values
            record["agent_id"].encode(),
            msgspec.json.encode({k: v for k, v in record.items() if k not in _NOT_ON_WIRE}),
        )
        for record in records
    ]
    kinds = Counter(record["kind"] for record in records)
    spec_dict = {"seed": spec.seed, "agents_per_role": spec.agents_per_role,
                 "history_days": spec.history_days, "attack_days": spec.attack_days,
                 "limit": limit, "grants_widened": widen_grants}
    return Workload(spec_dict, records, messages, dict(kinds))


# -- 1. engine in process ---------------------------------------------------------------


@dataclass
class EngineResult:
    records: int
    calls: int
    seconds: float
    events_per_s: float
    us_per_event: float
    us_per_call: float
    decisions: dict[str, int]
    revoke_reasons: dict[str, int]
    revocations: int
    audits: int
    stages_us_per_event: dict[str, float]
    load_avg: float | None = None
    profile_top: list[dict[str, Any]] = field(default_factory=list)
    profile_by_area: list[dict[str, Any]] = field(default_factory=list)
    profile_key: list[dict[str, Any]] = field(default_factory=list)


def _run_replay(events: Sequence[Event]) -> tuple[float, list[Outcome]]:
    engine = Engine()
    start = time.process_time()
    outcomes = list(replay(events, engine))
    return time.process_time() - start, outcomes


def bench_engine(work: Workload, *, profile: bool) -> EngineResult:
    """The engine over the fleet in process, and what the worker's other steps cost."""
    n = len(work.records)
    load_before = os.getloadavg()[0]
    start = time.process_time()
    events = [decode_replay_record(record) for record in work.records]
    replay_decode = time.process_time() - start

    seconds, outcomes = _run_replay(events)
    verdicts = [v for o in outcomes for v in o.verdicts]
    revocations = [r for o in outcomes for r in o.revocations]
    audits = [a for o in outcomes for a in o.audits]

    # The worker's other steps, each over the whole fleet, without Kafka.
    decoder = Decoder(GrantVerifier(None, allow_unsigned=True))
    start = time.process_time()
    for message, event, record in zip(work.messages, events, work.records, strict=True):
        decoder.decode(record["kind"], message.key, message.value, event_time(event))
    wire_decode = time.process_time() - start
    start = time.process_time()
    for verdict in verdicts:
        encode(verdict)
    for audit in audits:
        encode(audit)
    encoding = time.process_time() - start
    key = generate_key()
    start = time.process_time()
    for revocation in revocations:
        encode_revocation(revocation, key, issuer="urn:bench", audience="urn:bench",
                          issued_at=time.time())
    signing = time.process_time() - start
    stages = {
        "decode (wire bytes → event)": wire_decode,
        "engine (tick + process)": seconds,
        "encode (verdicts, audits)": encoding,
        "sign revocations": signing,
    }
    result = EngineResult(
        records=n,
        calls=work.calls,
        seconds=seconds,
        events_per_s=n / seconds,
        us_per_event=seconds / n * 1e6,
        us_per_call=seconds / max(work.calls, 1) * 1e6,
        decisions=dict(Counter(v.decision for v in verdicts)),
        revoke_reasons=dict(Counter(v.reasons[0].code if v.reasons else "-"
                                    for v in verdicts if v.decision == "revoke").most_common(5)),
        revocations=len(revocations),
        audits=len(audits),
        stages_us_per_event={name: s / n * 1e6 for name, s in stages.items()},
        load_avg=(load_before + os.getloadavg()[0]) / 2,
    )
    result.stages_us_per_event["(replay-format decode, not in worker)"] = replay_decode / n * 1e6
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        _run_replay(events)
        profiler.disable()
        stats = pstats.Stats(profiler)
        result.profile_top = top_functions(stats)
        result.profile_by_area = by_area(stats)
        result.profile_key = key_functions(stats, ENGINE_FUNCTIONS)
    return result


# -- profiles ---------------------------------------------------------------------------


def _where(filename: str) -> str:
    """A short name for the code a profiled function lives in."""
    if filename == "~":
        return "builtins"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    if "python3" in filename:
        return "stdlib:" + path.stem
    return filename


def top_functions(stats: pstats.Stats, count: int = 20) -> list[dict[str, Any]]:
    """The functions with the most own time."""
    rows = [
        {"function": f"{_where(file)}:{line}({name})", "calls": nc, "tottime_s": tt,
         "cumtime_s": ct}
        for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    rows.sort(key=lambda row: row["tottime_s"], reverse=True)
    return rows[:count]


KEY_FUNCTIONS: tuple[tuple[str, str, str], ...] = (
    # label, file path ending, function name
    ("worker: Pipeline.handle (one input record)", "pipeline/app.py", "handle"),
    ("  decode (Decoder.decode)", "pipeline/decoding.py", "decode"),
    ("  engine (Engine.process)", "models/engine.py", "process"),
    ("  publish (Publisher.publish)", "pipeline/publishing.py", "publish"),
    ("    sign revocations (encode_revocation)", "models/revocation_tokens.py",
     "encode_revocation"),
    ("    encode verdicts/audits (contracts.encode)", "models/contracts.py", "encode"),
    ("  dead letters (Publisher.dead_letter)", "pipeline/publishing.py", "dead_letter"),
    ("engine tick (timer)", "models/engine.py", "tick"),
    ("table write (faust Table.on_key_set)", "faust/tables/table.py", "on_key_set"),
    ("  changelog send (Collection.send_changelog)", "faust/tables/base.py", "send_changelog"),
    ("faust Topic.send", "faust/topics.py", "send"),
    ("faust Topic.publish_message", "faust/topics.py", "publish_message"),
    ("aiokafka producer send", "aiokafka/producer/producer.py", "send"),
    ("logging (Logger._log)", "logging/__init__.py", "_log"),
    ("bare: forward agent", "bench/bare_stream.py", "forward"),
)
"""Functions whose cumulative time says where a worker's time goes (coroutines: per resume)."""


ENGINE_FUNCTIONS: tuple[tuple[str, str, str], ...] = (
    ("Engine.process", "models/engine.py", "process"),
    ("  conformance (check_call)", "models/conformance.py", "check_call"),
    ("  Detector.assess", "models/detection.py", "assess"),
    ("    behaviour components (Detector._components)", "models/detection.py", "_components"),
    ("    explanations (Detector._reasons)", "models/detection.py", "_reasons"),
    ("    per-task observation (TaskContext.observe)", "models/features.py", "observe"),
    ("    intent alignment (intent.align)", "models/intent.py", "align"),
    ("    shared model score (raw_score_one)", "models/multivariate.py", "raw_score_one"),
    ("  revocation (Engine._revoke)", "models/engine.py", "_revoke"),
    ("  audit record (Engine._audit)", "models/engine.py", "_audit"),
    ("  learning at task end (Detector.end_task)", "models/detection.py", "end_task"),
    ("    shared model learn (multivariate learn_one)", "models/multivariate.py", "learn_one"),
    ("Engine.tick", "models/engine.py", "tick"),
    ("  Engine._sweep (all tasks, every ≥60 s of stream time)", "models/engine.py", "_sweep"),
)
"""The engine's parts (``end_task`` runs both from ``process`` and from ``tick``)."""


def key_functions(
    stats: pstats.Stats, functions: Sequence[tuple[str, str, str]] = KEY_FUNCTIONS
) -> list[dict[str, Any]]:
    """Calls and cumulative seconds of ``functions`` found in ``stats``.

    Where a file has several functions of that name (methods of different classes),
    the one with the most cumulative time counts: the outermost, without double counting.
    """
    rows = []
    for label, path, function in functions:
        calls, cumtime = 0, 0.0
        for (file, _line, name), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if name == function and file.endswith(path) and ct > cumtime:
                calls, cumtime = nc, ct
        if calls:
            rows.append({"function": label, "calls": calls, "cumtime_s": cumtime})
    return rows


def by_area(stats: pstats.Stats, count: int = 20) -> list[dict[str, Any]]:
    """Own time summed by package (site-packages) or file (this repository)."""
    areas: Counter[str] = Counter()
    for (file, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = _where(file)
        if where == "builtins":
            where = "builtin " + name.split(" of ")[0].strip("<>").removeprefix("built-in method ")
        areas[where] += tt
    total = sum(areas.values()) or 1.0
    return [{"area": area, "tottime_s": tt, "share": tt / total}
            for area, tt in areas.most_common(count)]


# -- Kafka helpers ----------------------------------------------------------------------


def recreate_topics(admin: KafkaAdminClient, topics: dict[str, dict[str, str]], partitions: int,
                    timeout: float = 60.0) -> None:
    """Delete ``topics`` if they exist and create them with ``partitions`` partitions."""
    existing = set(admin.list_topics())
    doomed = [name for name in topics if name in existing]
    deadline = time.monotonic() + timeout
    if doomed:
        admin.delete_topics(doomed)
        while set(doomed) & set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {doomed} were not deleted within {timeout:g}s")
            time.sleep(0.2)
    pending = dict(topics)
    while pending:
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)
                                 for name, configs in pending.items()])
            pending = {}
        except TopicAlreadyExistsError:  # a deletion still being finished by the broker
            pending = {n: c for n, c in pending.items() if n not in set(admin.list_topics())}
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def preload(
    bootstrap: str, messages: Sequence[Message], topic_of: Callable[[Message], str]
) -> float:
    """Produce ``messages`` (in order) and wait until all are acknowledged; returns seconds."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * 1024 * 1024)
    start = time.perf_counter()
    try:
        for message in messages:
            producer.send(topic_of(message), key=message.key, value=message.value)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - start


def partitions_of(topic: str, partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(partitions)]


@dataclass
class TopicContents:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    values: list[bytes] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    """Dead-letter reasons (header ``dlq.error.class``) by count."""


def read_topic(bootstrap: str, topic: str, partitions: int, *, keep_values: bool,
               timeout: float = 120.0) -> TopicContents:
    """Every record of ``topic`` now: count, first and last broker timestamps, values."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        tps = partitions_of(topic, partitions)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        contents = TopicContents()
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=50_000).items():
                for record in records:
                    contents.count += 1
                    ts = record.timestamp
                    first, last = contents.first_ms, contents.last_ms
                    contents.first_ms = ts if first is None else min(first, ts)
                    contents.last_ms = ts if last is None else max(last, ts)
                    if keep_values:
                        contents.values.append(record.value)
                    for name, value in record.headers or ():
                        if name == DLQ_HEADERS.ERROR_CLASS:
                            contents.reasons[value.decode(errors="replace")] += 1
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return contents
    finally:
        consumer.close()


def end_offsets_sum(consumer: KafkaConsumer, tps: list[TopicPartition]) -> int:
    return sum(consumer.end_offsets(tps).values())


# -- stream workers ---------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class StreamResult:
    name: str
    partitions: int
    inputs: int
    expected_outputs: int
    outputs: int
    completed: bool
    window_s: float | None
    """From the first to the last output record (broker LogAppendTime)."""
    events_per_s: float | None
    """Input records over the window."""
    us_per_event: float | None
    """Wall µs per input record (the window over the input records)."""
    cpu_us_per_event: float | None
    """Worker process CPU (user + system) per input record while outputs grew."""
    cpu_sys_share: float | None
    """System (kernel) share of that CPU: socket writes and reads, mostly."""
    broker_cpu_us_per_event: float | None
    startup_s: float | None
    """From starting the worker process to its first output."""
    wall_s: float
    """From starting the worker process to its last output."""
    preload_s: float
    load_avg: float | None
    """Mean 1-minute load average while waiting (the machine is shared: > CPUs = contended)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Watch:
    """What was seen while waiting: the output count and CPU use while outputs grew."""

    count: int = 0
    cpu_first: tuple[int, float, float, float] | None = None
    """(outputs, worker user CPU s, worker system CPU s, broker CPU s) at the first output."""
    cpu_last: tuple[int, float, float, float] | None = None
    """The same at the last sample where outputs had grown."""
    load: list[float] = field(default_factory=list)
    """1-minute load averages sampled while waiting."""

    def cpu_us_per_output(self) -> tuple[float, float, float] | None:
        """Worker user, worker system and broker CPU µs per output record while outputs grew."""
        if self.cpu_first is None or self.cpu_last is None:
            return None
        outputs = self.cpu_last[0] - self.cpu_first[0]
        if outputs <= 0:
            return None
        user, system, broker = (
            (last - first) / outputs * 1e6
            for first, last in zip(self.cpu_first[1:], self.cpu_last[1:], strict=True)
        )
        return user, system, broker


def wait_for_outputs(worker: WorkerProcess, broker_pid: int, bootstrap: str, topic: str,
                     partitions: int, expected: int, *, timeout: float, stall: float,
                     label: str) -> Watch:
    """Watch ``topic``'s end offsets until ``expected`` records, a stall, a timeout or death.

    Shows a progress bar; samples the worker's and the broker's CPU time whenever the
    output count grows, so CPU per record can be told apart from time spent waiting.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    watch = Watch()
    tps = partitions_of(topic, partitions)
    deadline = time.monotonic() + timeout
    last_change, seen = time.monotonic(), 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(label, total=expected, rate="starting")
            rate_mark: tuple[float, int] | None = None
            while True:
                count = end_offsets_sum(consumer, tps)
                now = time.monotonic()
                watch.count = count
                watch.load.append(os.getloadavg()[0])
                if count != seen:
                    sample = (count, *cpu_times(worker.pid), sum(cpu_times(broker_pid)))
                    if watch.cpu_first is None:
                        watch.cpu_first = sample
                    watch.cpu_last = sample
                    if rate_mark is None:
                        rate_mark = (now, count)
                    elif now > rate_mark[0]:
                        rate = (count - rate_mark[1]) / (now - rate_mark[0])
                        progress.update(task, rate=f"{rate:,.0f}/s")
                    seen, last_change = count, now
                progress.update(task, completed=min(count, expected))
                if count >= expected:
                    return watch
                if not worker.alive():
                    console.print(f"[red]{label}: the worker exited ({worker.returncode}):"
                                  f"[/red]\n{worker.log_tail(15)}")
                    return watch
                if now > deadline:
                    console.print(f"[yellow]{label}: timed out after {timeout:g}s[/yellow]")
                    return watch
                if seen and now - last_change > stall:
                    console.print(f"[yellow]{label}: no new output for {stall:g}s[/yellow]")
                    return watch
                time.sleep(0.2)
    finally:
        consumer.close()


def _measure(name: str, worker: WorkerProcess, broker: localkafka.LocalKafka, topic: str,
             partitions: int, inputs: int, expected: int, preload_s: float,
             args: argparse.Namespace, label: str) -> tuple[StreamResult, TopicContents]:
    """Wait for ``expected`` outputs on ``topic``, stop the worker, read the outputs back."""
    try:
        watch = wait_for_outputs(worker, broker.pid, broker.bootstrap, topic, partitions,
                                 expected, timeout=args.timeout, stall=args.stall, label=label)
    finally:
        worker.stop()
    contents = read_topic(broker.bootstrap, topic, partitions, keep_values=name.startswith(IW))
    window = events = us = None
    first, last = contents.first_ms, contents.last_ms
    if first is not None and last is not None and last > first:
        window = (last - first) / 1000
        events = inputs / window
        us = 1e6 / events
    per_output = watch.cpu_us_per_output()
    scale = expected / inputs  # outputs per input record
    result = StreamResult(
        name=name, partitions=partitions, inputs=inputs, expected_outputs=expected,
        outputs=watch.count, completed=watch.count >= expected, window_s=window,
        events_per_s=events, us_per_event=us,
        cpu_us_per_event=None if per_output is None else (per_output[0] + per_output[1]) * scale,
        cpu_sys_share=None if per_output is None or not sum(per_output[:2])
        else per_output[1] / sum(per_output[:2]),
        broker_cpu_us_per_event=None if per_output is None else per_output[2] * scale,
        startup_s=None if first is None else first / 1000 - worker.started,
        wall_s=(last / 1000 if last else time.time()) - worker.started,
        preload_s=preload_s,
        load_avg=sum(watch.load) / len(watch.load) if watch.load else None,
    )
    return result, contents


BARE = "bare faust stream"
BARE_QUIET = "bare faust stream, no spinner"
IW = "intentwatch worker"


def run_bare(broker: localkafka.LocalKafka, work: Workload, partitions: int, run_dir: Path,
             tag: str, args: argparse.Namespace, *, profile_to: Path | None = None,
             no_spinner: bool = False) -> StreamResult:
    """The forwarding worker; ``no_spinner`` keeps faust from logging at DEBUG."""
    name = BARE_QUIET if no_spinner else BARE
    tag = f"{tag}-quiet" if no_spinner else tag
    source, sink = f"bench.bare.{tag}.in", f"bench.bare.{tag}.out"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        recreate_topics(admin, {source: {}, sink: LOG_APPEND}, partitions)
    finally:
        admin.close()
    preload_s = preload(broker.bootstrap, work.messages, lambda _: source)
    env = {"INTENTWATCH_APP_ID": f"bench-bare-{tag}", "INTENTWATCH_PARTITIONS": str(partitions),
           "BENCH_INPUT": source, "BENCH_OUTPUT": sink,
           "BENCH_NO_SPINNER": "1" if no_spinner else "0", **args.faust_env}
    worker = WorkerProcess.start(broker.bootstrap, run_dir / f"bare-{tag}", env=env,
                                 module="bench.bare_stream", profile_to=profile_to, cwd=ROOT)
    label = f"{name}, {partitions} partition(s)" + (", cProfile" if profile_to else "")
    n = len(work.messages)
    result, _ = _measure(name, worker, broker, sink, partitions, n, n, preload_s, args, label)
    return result


def run_intentwatch(broker: localkafka.LocalKafka, work: Workload, partitions: int,
                    run_dir: Path, tag: str, args: argparse.Namespace, *,
                    profile_to: Path | None = None, variant: tuple[str, str] | None = None,
                    ) -> StreamResult:
    """``python -m intentwatch.pipeline.worker`` over the fleet on freshly made topics
    (``variant``: one of its settings, ``(NAME, value)`` of ``INTENTWATCH_NAME``, else
    its defaults)."""
    tag = tag if variant is None else f"{tag}-{variant[0].lower()}{variant[1]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    topics = {TOPICS[name]: (LOG_APPEND if name in OUTPUT_TOPICS else {}) for name in TOPICS}
    try:
        recreate_topics(admin, topics, partitions)
    finally:
        admin.close()
    preload_s = preload(broker.bootstrap, work.messages, lambda message: message.topic)
    env = {"INTENTWATCH_APP_ID": f"bench-iw-{tag}", "INTENTWATCH_PARTITIONS": str(partitions),
           "INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "1", **args.faust_env,
           **({} if variant is None else {f"INTENTWATCH_{variant[0]}": variant[1]})}
    worker = WorkerProcess.start(broker.bootstrap, run_dir / f"iw-{tag}", env=env,
                                 profile_to=profile_to)
    label = f"{IW}, {partitions} partition(s)" + (", cProfile" if profile_to else "")
    name = IW if variant is None else f"{IW}, {variant[0]}={variant[1]}"
    result, contents = _measure(name, worker, broker, TOPICS["verdicts"], partitions,
                                len(work.messages), work.calls, preload_s, args, label)
    verdicts = [msgspec.json.decode(value) for value in contents.values]
    ids = Counter(v["event_id"] for v in verdicts)
    dead = read_topic(broker.bootstrap, TOPICS["dlq"], partitions, keep_values=False)
    revoke_reasons = Counter(v["reasons"][0]["code"] if v["reasons"] else "-"
                             for v in verdicts if v["decision"] == "revoke")
    result.extra = {
        "decisions": dict(Counter(v["decision"] for v in verdicts)),
        "revoke_reasons": dict(revoke_reasons.most_common(5)),
        "duplicate_verdicts": sum(c - 1 for c in ids.values() if c > 1),
        **{f"{name}_records": read_topic(broker.bootstrap, TOPICS[name], partitions,
                                         keep_values=False).count
           for name in ("revocations", "audit")},
        "dlq_records": dead.count,
        "dlq_reasons": dict(dead.reasons),
    }
    return result


# -- report -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    model = "unknown"
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    versions["kafka broker"] = localkafka.KAFKA_VERSION
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "–" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def report(info: dict[str, Any], work: Workload, engine: EngineResult,
           streams: list[StreamResult], faust_env: dict[str, str]) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    console.rule("[bold]intentwatch throughput")
    console.print(f"[bold]machine[/bold]  {info['cpu_count']} × {info['cpu_model']}; Python "
                  f"{info['python']}; {info['platform']}")
    console.print(f"[bold]versions[/bold] {versions}")
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(work.kinds.items()))
    console.print(f"[bold]workload[/bold] fleet {work.spec}: {len(work.records):,} records "
                  f"({kinds})")
    if faust_env:
        console.print(f"[bold]faust settings from the environment[/bold] {faust_env}")

    table = Table(title="Throughput (events = input records: tool calls + grants + task events)")
    columns = ("measured", "how", "partitions", "records", "outputs", "window s", "events/s",
               "wall µs/event", "CPU µs/event", "sys", "broker CPU µs/event", "load",
               "events/s vs bare", "CPU vs bare")
    for column in columns:
        table.add_column(column, justify="left" if column in ("measured", "how") else "right")
    table.add_row(
        "engine in process", "replay() of decoded events, no Kafka; CPU time", "–",
        f"{engine.records:,}",
        f"{engine.calls:,} verdicts", f"{engine.seconds:.2f}", _num(engine.events_per_s),
        f"{engine.us_per_event:.1f}", f"{engine.us_per_event:.1f}", "", "–",
        _num(engine.load_avg, ".1f"), "", "",
    )
    bare = {s.partitions: s for s in streams if s.name == BARE}
    for s in streams:
        how = {
            BARE: "forward raw bytes, concurrency=1",
            BARE_QUIET: "same, root logger not at DEBUG",
        }.get(s.name, "decode → engine → publish, 3 agents")
        base = bare.get(s.partitions)
        outputs = f"{s.outputs:,}/{s.expected_outputs:,}" + ("" if s.completed else " (!)")
        table.add_row(
            s.name, how, str(s.partitions), f"{s.inputs:,}", outputs, _num(s.window_s, ".2f"),
            _num(s.events_per_s), _num(s.us_per_event, ".1f"), _num(s.cpu_us_per_event, ".1f"),
            _num(s.cpu_sys_share, ".0%"), _num(s.broker_cpu_us_per_event, ".1f"),
            _num(s.load_avg, ".1f"),
            _ratio(s.events_per_s, base.events_per_s if base else None),
            _ratio(s.cpu_us_per_event, base.cpu_us_per_event if base else None),
        )
    console.print(table)
    console.print(
        "window: first to last output record (broker LogAppendTime); CPU: the worker process's "
        "user+system time per input record while outputs grew (robust to other load on the "
        f"machine); load: mean 1-min load average on {info['cpu_count']} CPUs."
    )
    console.print(
        f"engine: {engine.us_per_call:.1f} µs per tool call (all engine time / tool calls); "
        f"decisions {engine.decisions}, revoke reasons {engine.revoke_reasons}, "
        f"{engine.revocations} revocations, {engine.audits} audits"
    )
    for s in streams:
        line = (f"{s.name}, {s.partitions} partition(s): preload {s.preload_s:.1f}s, "
                f"start → first output {_num(s.startup_s, '.1f')}s, "
                f"start → last {s.wall_s:.1f}s")
        if s.extra:
            line += f"; {s.extra}"
        console.print(line)

    stages = Table(title="Worker steps without Kafka (in process, same fleet), CPU µs per event")
    stages.add_column("step")
    stages.add_column("µs/event", justify="right")
    for name, us in engine.stages_us_per_event.items():
        stages.add_row(name, f"{us:.1f}")
    in_process = sum(us for name, us in engine.stages_us_per_event.items()
                     if not name.startswith("("))
    stages.add_row("[bold]sum of worker steps", f"[bold]{in_process:.1f}")
    for s in streams:
        base = bare.get(s.partitions)
        if s.name.startswith(IW) and s.cpu_us_per_event and base and base.cpu_us_per_event:
            stages.add_row(f"bare faust stream, {s.partitions} partition(s)",
                           f"{base.cpu_us_per_event:.1f}")
            stages.add_row(f"{s.name}, {s.partitions} partition(s)",
                           f"{s.cpu_us_per_event:.1f}")
            rest = s.cpu_us_per_event - base.cpu_us_per_event - in_process
            stages.add_row(f"  not explained by bare + steps (table writes, 3 agents, "
                           f"more sends, …), {s.partitions} partition(s)", f"{rest:.1f}")
    console.print(stages)


def print_profile(title: str, profile: dict[str, Any], count: int = 12) -> None:
    """Print a profile summary: own time by area, top functions, key functions."""
    table = Table(title=f"{title}: own time by area")
    for column in ("area", "s", "share"):
        table.add_column(column, justify="left" if column == "area" else "right")
    for row in profile["by_area"][:count]:
        table.add_row(row["area"], f"{row['tottime_s']:.2f}", f"{row['share']:.0%}")
    console.print(table)
    table = Table(title=f"{title}: top functions by own time")
    for column in ("function", "calls", "own s", "cum s"):
        table.add_column(column, justify="left" if column == "function" else "right")
    for row in profile["top"][:count]:
        table.add_row(row["function"], f"{row['calls']:,}", f"{row['tottime_s']:.2f}",
                      f"{row['cumtime_s']:.2f}")
    console.print(table)
    if profile.get("key"):
        inputs = profile["inputs"]
        table = Table(title=f"{title}: where the time goes (cumulative, {inputs:,} input records)")
        for column in ("function", "calls", "cum s", "µs per input record"):
            table.add_column(column, justify="left" if column == "function" else "right")
        for row in profile["key"]:
            table.add_row(row["function"], f"{row['calls']:,}", f"{row['cumtime_s']:.2f}",
                          f"{row['cumtime_s'] / inputs * 1e6:.0f}")
        console.print(table)


def summarize_profile(path: Path, run: StreamResult) -> dict[str, Any]:
    """What a worker's cProfile says, with the run it came from."""
    stats = pstats.Stats(str(path))
    return {
        "partitions": run.partitions,
        "inputs": run.inputs,
        "events_per_s_under_cprofile": run.events_per_s,
        "own_time_s": sum(row[2] for row in stats.stats.values()),  # type: ignore[attr-defined]
        "key": key_functions(stats),
        "by_area": by_area(stats, 30),
        "top": top_functions(stats, 40),
    }


def write_results(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(path)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--agents-per-role", type=int, default=12)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--attack-days", type=float, default=3.0)
    parser.add_argument("--limit", type=int, default=None, help="use the first N records only")
    parser.add_argument("--partitions", default="6,1",
                        help="comma-separated partition counts, one set of runs each")
    parser.add_argument("--runs", default="bare,quiet,intentwatch",
                        help="stream runs per partition count: bare (faust defaults), quiet "
                             "(bare without faust's spinner), intentwatch")
    parser.add_argument("--port", type=int, default=59092, help="local broker port (0: any free)")
    parser.add_argument("--timeout", type=float, default=300.0, help="max seconds per run")
    parser.add_argument("--stall", type=float, default=30.0,
                        help="stop waiting after this many seconds without new output")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile the engine and one more run of each worker")
    parser.add_argument("--grants-as-generated", action="store_true",
                        help="keep the fleet's grant validity (most grants then go to the "
                             "worker's DLQ on a pre-loaded backlog); default: widen it")
    parser.add_argument("--profile-records", type=int, default=10_000,
                        help="records for the cProfiled worker runs (cProfile slows them)")
    parser.add_argument("--skip-streams", action="store_true", help="engine only, no Kafka")
    parser.add_argument("--faust-env", action="append", default=[], metavar="NAME=VALUE",
                        help="faust setting for both workers as an environment variable, "
                             "e.g. PRODUCER_LINGER=0.005 (repeatable)")
    parser.add_argument("--variants", default="",
                        help="comma-separated worker settings NAME=VALUE (INTENTWATCH_NAME), "
                             "e.g. FLUSH_RECORDS=1,FLUSH_RECORDS=200: one intentwatch run "
                             "each, side by side (default: one run, the worker's defaults)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep broker data and worker logs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    variants = [item.strip().split("=", 1) for item in args.variants.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in variants):
        parser.error("--variants takes NAME=VALUE,...")
    args.variants = [(name.upper(), value) for name, value in variants]
    pairs = [item.split("=", 1) for item in args.faust_env]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("--faust-env takes NAME=VALUE")
    args.faust_env = dict(pairs)
    args.runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = set(args.runs) - {"bare", "quiet", "intentwatch"}
    if unknown:
        parser.error(f"unknown --runs: {', '.join(sorted(unknown))}")
    return args


@contextlib.contextmanager
def local_broker(port: int, home: Path) -> Iterator[localkafka.LocalKafka]:
    broker = localkafka.up(port or localkafka.free_port(), home=home, timeout=90)
    try:
        yield broker
    finally:
        localkafka.down(home)


def run_streams(args: argparse.Namespace, work: Workload, run_dir: Path,
                ) -> tuple[list[StreamResult], dict[str, dict[str, Any]]]:
    """Both stream workers for every partition count, then (``--profile``) under cProfile."""
    streams: list[StreamResult] = []
    profiles: dict[str, dict[str, Any]] = {}
    console.print("starting the local Kafka broker")
    with local_broker(args.port, run_dir / "kafka") as broker:
        console.print(f"broker {broker.bootstrap} (pid {broker.pid}), work dir {run_dir}")
        run_id = uuid.uuid4().hex[:6]
        counts = [int(p) for p in args.partitions.split(",") if p.strip()]
        chosen = {"bare": (run_bare, {}), "quiet": (run_bare, {"no_spinner": True}),
                  "intentwatch": (run_intentwatch, {})}
        variants: list[dict[str, Any]] = [{"variant": v} for v in args.variants] or [{}]
        for partitions in counts:
            tag = f"p{partitions}-{run_id}"
            for which in args.runs:
                run, options = chosen[which]
                for variant in variants if which == "intentwatch" else [{}]:
                    result = run(broker, work, partitions, run_dir, tag, args,
                                 **options, **variant)
                    streams.append(result)
                    console.print(f"{result.name}, {partitions} partition(s): "
                                  f"{_num(result.events_per_s)} events/s")
        if args.profile and counts:
            sample = work.head(args.profile_records)
            for name, run in ((BARE, run_bare), (IW, run_intentwatch)):
                prof = run_dir / f"{name.split()[0]}.prof"
                result = run(broker, sample, counts[0], run_dir,
                             f"prof-p{counts[0]}-{run_id}", args, profile_to=prof)
                if prof.exists():
                    profiles[name] = summarize_profile(prof, result)
                else:
                    console.print(f"[yellow]the profiled {name} wrote no profile[/yellow]")
    return streams, profiles


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    info = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine()}
    with console.status("generating the fleet"):
        spec = FleetSpec(seed=args.seed, agents_per_role=args.agents_per_role,
                         history_days=args.history_days, attack_days=args.attack_days)
        work = make_workload(spec, args.limit, widen_grants=not args.grants_as_generated)
    console.print(f"fleet: {len(work.records):,} records, {work.kinds}")
    with console.status("engine in process"):
        engine = bench_engine(work, profile=args.profile)
    console.print(f"engine in process: {engine.events_per_s:,.0f} events/s")

    streams: list[StreamResult] = []
    profiles: dict[str, dict[str, Any]] = {}
    if not args.skip_streams:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            streams, profiles = run_streams(args, work, args.workdir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="intentwatch-bench-") as tmp:
                streams, profiles = run_streams(args, work, Path(tmp))

    report(info, work, engine, streams, args.faust_env)
    if args.profile:
        engine_profile = {"by_area": engine.profile_by_area, "top": engine.profile_top,
                          "key": engine.profile_key, "inputs": engine.records}
        print_profile("engine (cProfile, in process)", engine_profile)
        for name, profile in profiles.items():
            print_profile(f"{name} (cProfile, {profile['partitions']} partition(s), "
                          f"{_num(profile['events_per_s_under_cprofile'])} events/s)", profile)
    write_results({
        "machine": info,
        "workload": {**work.spec, "records": len(work.records), "kinds": work.kinds},
        "faust_env": args.faust_env,
        "engine": asdict(engine),
        "streams": [asdict(s) for s in streams],
        "worker_profiles": profiles,
    }, args.output)
    console.print(f"results: {args.output}")


if __name__ == "__main__":
    main()
