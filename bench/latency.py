"""The revocation path under open-loop load: a violating call → a verified revocation.

A local Kafka broker (:mod:`intentwatch.local.kafka_broker`), one real worker process
(``python -m intentwatch.pipeline.worker``, signed grants, signed revocations) and a
:class:`~intentwatch.RevocationSubscriber` in a process of its own run on this machine
beside the load generator, which publishes with the real SDK
(:class:`~intentwatch.TelemetryPublisher`) at fixed rates of tool calls per second,
open loop: each call is due at ``start + i / rate`` whatever the worker does. Agents
run tasks of ``--calls-per-task`` calls (a signed grant and a start before the first,
an end after the last), interleaved over ``--agents`` agents; every ``--violation-every``
th call uses a tool its grant does not allow, which revokes on its own.

Per rate it reports the latency from the moment a violating call was due to publish to
the moment the subscriber had received and verified its revocation (p50, p99, max;
measured from the schedule, so a load generator running late counts against the
result), the verdict lag (calls published minus verdicts on the verdict topic, in
seconds of load, sampled twice a second) and its slope over the second half of the
run, the CPU each process spent per call while the calls were sent (``/proc``), the
machine's load, and the times at which the broker appended the call, its verdict and
its revocation (every topic stamps ``LogAppendTime``). A rate is sustained when the lag
does not grow (slope under ``--max-slope``, lag at the end under a second) and every
revocation arrived; rates run in increasing order, each on fresh topics with a fresh
worker (warmed up for ``--warmup`` seconds), and stop after the first one that is not
sustained (``--all`` runs every one). With ``--against REF`` a worker of that commit
(a detached git worktree) runs each rate too, interleaved with this tree's (the order
alternating), on the same broker: the machine may be shared, so compare the two.

Run ``python -m bench.latency --help``; ``--duration 60`` for the issue's runs. Results
go to ``bench/results/latency.json``. The benchmark reports; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from bench.throughput import (
    LOG_APPEND,
    WorkerProcess,
    console,
    cpu_times,
    end_offsets_sum,
    local_broker,
    machine,
    partitions_of,
    recreate_topics,
)
from intentwatch import RevocationSubscriber, TelemetryPublisher
from intentwatch.contracts import TOPICS
from intentwatch.local import kafka_broker as localkafka
from intentwatch.tokens.grants import sign_grant
from intentwatch.tokens.keys import generate_key

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latency.json"
ISSUER, AUDIENCE = "urn:intentwatch:bench", "urn:bench:brokers"
BROKER = "https://broker.acme.org"
ROLE = "spiffe://acme.org/agents/latency"
ALLOWED, FORBIDDEN = "crm.lookup_customer", "iam.update_user_password"


# -- the revocation subscriber, in a process of its own -----------------------------------


def subscribe(bootstrap: str, jwks_url: str, results: Any, ready: Any, stop: Any) -> None:
    """Receive verified revocations; put (evidence event ids, reason code, received at)."""
    subscriber = RevocationSubscriber(bootstrap, jwks=jwks_url, audience=AUDIENCE,
                                      issuer=ISSUER, offset="latest")
    ready.set()
    try:
        while not stop.is_set():
            for revocation in subscriber.poll(0.2):
                results.put((revocation.evidence, revocation.reason_code, time.time()))
    finally:
        subscriber.close()


# -- load -------------------------------------------------------------------------------


@dataclass
class RateResult:
    rate: float
    """Target tool calls per second."""
    duration_s: float
    calls: int
    sent_per_s: float
    """Calls over the time it took to publish them."""
    behind_max_ms: float
    """How late the load generator published a call at worst."""
    violations: int
    revocations_received: int
    latency_ms: dict[str, float | None]
    """Due to publish → received and verified: p50, p99, max."""
    lag_slope: float | None
    """Verdict lag growth over the second half of the run (seconds per second)."""
    lag_end_s: float | None
    lag_max_s: float | None
    drain_s: float | None
    """After the last call: until every verdict and revocation was out (None: never)."""
    sustained: bool
    cpu_us_per_call: dict[str, float]
    """CPU of each process while the calls were sent, per call."""
    dead_letters: int
    stages_ms: dict[str, dict[str, float | None]]
    """Due → each stage of the revocation path (broker append times), p50 and p99."""
    load_avg: list[float] = field(default_factory=list)
    lag_samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, verdict lag in seconds of load)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values``, nearest rank; None when empty.

    >>> percentile([5, 1, 3, 2, 4], 0.5), percentile([1, 2, 3], 0.99), percentile([], 0.5)
    (3, 3, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def slope(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) samples; None with fewer than three.

    >>> round(slope([(0, 1.0), (1, 1.5), (2, 2.0)]), 3)
    0.5
    """
    if len(samples) < 3:
        return None
    ts, ys = [t for t, _ in samples], [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in samples) / den if den else None


class Load:
    """One rate's calls and tasks, published open loop by the SDK."""

    def __init__(self, publisher: TelemetryPublisher, key: Any, rate: float, duration: float,
                 args: argparse.Namespace, tag: str) -> None:
        self.publisher, self.rate, self.args, self.tag = publisher, rate, args, tag
        self.total = int(rate * duration)
        self.due: dict[str, float] = {}
        """Event id of each violating call → when it was due."""
        self.sent = 0
        self.behind = 0.0
        self._open: dict[int, str] = {}
        self._pending = False
        self._violated: set[str] = set()
        now = time.time()
        grant_time = {"issued_at": now, "expires_at": now + 2 * duration + args.drain + 600.0}
        tasks = range(self.total // args.calls_per_task + args.agents + 1)
        self.grants = {n: sign_grant(self._grant(n, **grant_time), key) for n in tasks}
        self.start = time.time() + 0.5
        """When the first call is due (the grants are signed beforehand)."""

    def agent(self, slot: int) -> str:
        return f"{ROLE}/{self.tag}-a{slot}"

    def _grant(self, n: int, **times: float) -> dict[str, Any]:
        slot = n % self.args.agents
        task = f"{self.tag}-t{n}"
        return {"grant_id": f"g-{task}", "agent_id": self.agent(slot), "task_id": task,
                "credential_ids": [f"c-{task}"], "tools": ["crm.*"], "targets": ["crm.acme.org"],
                "data_labels": ["internal"], "intent": "look up the customer of ticket 42",
                "issuer": BROKER, **times}

    def run(self) -> None:
        """Publish every call at its due time (late ones at once), then end open tasks."""
        agents, per_task = self.args.agents, self.args.calls_per_task
        for i in range(self.total):
            due = self.start + i / self.rate
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            else:
                self.behind = max(self.behind, -wait)
            slot, turn = i % agents, i // agents
            n = (turn // per_task) * agents + slot  # task number: slot-th of its round
            task = f"{self.tag}-t{n}"
            first, last = turn % per_task == 0, turn % per_task == per_task - 1
            agent = self.agent(slot)
            if first:
                self.publisher.publish_grant(self.grants[n])
                self.publisher.publish_task_event({"agent_id": agent, "task_id": task,
                                                   "status": "started"})
                self._open[slot] = task
            event_id = f"{task}-c{i}"
            if i % self.args.violation_every == self.args.violation_every // 2:
                self._pending = True
            # one violation per task: a second one would be no new revocation
            violating = self._pending and task not in self._violated
            if violating:
                self.due[event_id] = due
                self._violated.add(task)
                self._pending = False
            self.publisher.publish_toolcall({
                "event_id": event_id, "agent_id": agent, "task_id": task,
                "tool": FORBIDDEN if violating else ALLOWED, "credential_id": f"c-{task}",
                "target": f"https://crm.acme.org/customers/{i % 977}", "data_labels": ["internal"],
            })
            self.sent = i + 1
            if last:
                self._end(slot)
        for slot in list(self._open):
            self._end(slot)
        self.publisher.flush()

    def _end(self, slot: int) -> None:
        self.publisher.publish_task_event({"agent_id": self.agent(slot),
                                           "task_id": self._open.pop(slot),
                                           "status": "completed"})


# -- one rate ---------------------------------------------------------------------------


def appended(bootstrap: str, topic: str, partitions: int, ids: set[str],
             evidence: bool) -> dict[str, float]:
    """When the broker appended (LogAppendTime) the record about each of ``ids``: a
    verdict's ``event_id`` or, with ``evidence``, a revocation's evidence."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    found: dict[str, float] = {}
    try:
        tps = partitions_of(topic, partitions)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                for record in records:
                    if evidence:
                        payload = record.value.split(b".")[1]
                        payload += b"=" * (-len(payload) % 4)
                        keys = _evidence(json.loads(base64.urlsafe_b64decode(payload)))
                    elif record.value.startswith(b"{"):  # not a tick or a signed grant
                        keys = [msgspec.json.decode(record.value, type=_EventId).event_id]
                    else:
                        continue
                    for key in keys:
                        if key in ids:
                            found.setdefault(key, record.timestamp / 1000)
    finally:
        consumer.close()
    return found


class _EventId(msgspec.Struct):
    event_id: str


def _evidence(claims: Any) -> list[str]:
    """Evidence event ids anywhere in a SET's claims (unverified: for timing only)."""
    if isinstance(claims, dict):
        if isinstance(claims.get("evidence"), list):
            return [str(e) for e in claims["evidence"]]
        return [e for value in claims.values() for e in _evidence(value)]
    return []


class Records:
    """A topic's record count (end offsets), from a consumer of its own."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._tps = partitions_of(topic, partitions)

    def count(self) -> int:
        return end_offsets_sum(self._consumer, self._tps)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Rig:
    """What every rate runs on: the broker, the publisher, the issuer's key, the topic
    counters, the subscriber's queue and the processes to measure."""

    bootstrap: str
    publisher: TelemetryPublisher
    key: Any
    verdicts: Records
    dead_letters: Records
    received: Any
    pids: dict[str, int]


def run_rate(rate: float, args: argparse.Namespace, rig: Rig, tag: str) -> RateResult:
    bootstrap, verdicts, dead_letters = rig.bootstrap, rig.verdicts, rig.dead_letters
    received, pids = rig.received, rig.pids
    load = Load(rig.publisher, rig.key, rate, args.duration, args, tag)
    base = verdicts.count()
    samples: list[tuple[float, float]] = []
    loads: list[float] = []
    arrivals: dict[str, float] = {}

    def collect() -> None:
        while not received.empty():
            evidence, _, at = received.get_nowait()
            for event_id in evidence:
                if event_id in load.due:
                    arrivals.setdefault(event_id, at)

    cpu_before = {name: sum(cpu_times(pid)) for name, pid in pids.items()}
    dead_before = dead_letters.count()
    sender = threading.Thread(target=load.run, name="load", daemon=True)
    sender.start()
    while sender.is_alive():
        sender.join(0.5)
        now = time.time()
        if now > load.start:
            out = verdicts.count() - base
            samples.append((now - load.start, max(0, load.sent - out) / rate))
            loads.append(os.getloadavg()[0])
        collect()
    ended = time.time()
    send_s = ended - load.start
    cpu = {name: (sum(cpu_times(pid)) - cpu_before[name]) / load.total * 1e6
           for name, pid in pids.items()}
    drained = None
    while time.time() - ended < args.drain:
        collect()
        if verdicts.count() - base >= load.total and len(arrivals) == len(load.due):
            drained = time.time() - ended
            break
        time.sleep(0.2)
    latencies = [(arrivals[e] - due) * 1000 for e, due in load.due.items() if e in arrivals]
    ids = set(load.due)
    stages = {"call appended": appended(bootstrap, TOPICS["events"], args.partitions, ids,
                                        evidence=False),
              "verdict appended": appended(bootstrap, TOPICS["verdicts"], args.partitions, ids,
                                           evidence=False),
              "revocation appended": appended(bootstrap, TOPICS["revocations"], args.partitions,
                                              ids, evidence=True),
              "received and verified": arrivals}
    stage_ms = {name: {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}
                for name, at in stages.items()
                for values in [[(at[e] - due) * 1000 for e, due in load.due.items() if e in at]]}
    half = [(t, lag) for t, lag in samples if t >= send_s / 2]
    lag_slope = slope(half)
    lag_end = samples[-1][1] if samples else None
    sustained = (lag_slope is not None and lag_slope < args.max_slope and lag_end is not None
                 and lag_end < 1.0 and len(latencies) == len(load.due))
    return RateResult(
        rate=rate, duration_s=args.duration, calls=load.total, sent_per_s=load.total / send_s,
        behind_max_ms=load.behind * 1000, violations=len(load.due),
        revocations_received=len(latencies),
        latency_ms={"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                    "max": max(latencies) if latencies else None},
        lag_slope=lag_slope, lag_end_s=lag_end,
        lag_max_s=max((lag for _, lag in samples), default=None), drain_s=drained,
        sustained=sustained, cpu_us_per_call=cpu, dead_letters=dead_letters.count() - dead_before,
        stages_ms=stage_ms, load_avg=loads, lag_samples=samples,
    )


# -- the run ----------------------------------------------------------------------------


def wait_ready(worker: WorkerProcess, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise SystemExit(f"the worker exited:\n{worker.tail()}")
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
                status = json.loads(response.read())
            if status.get("ready") and status.get("partitions"):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the worker was not ready within {timeout:g} s:\n{worker.tail()}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(name: str, results: list[RateResult]) -> None:
    from rich.table import Table

    table = Table(title=f"{name}: violating call due → verified revocation at a "
                  "RevocationSubscriber")
    for column in ("calls/s", "sent/s", "late max ms", "revocations", "p50 ms", "p99 ms",
                   "max ms", "lag slope s/s", "lag end s", "worker µs/call", "broker µs/call",
                   "dead letters", "load", "sustained"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.rate:,.0f}", f"{r.sent_per_s:,.0f}", _ms(r.behind_max_ms),
            f"{r.revocations_received}/{r.violations}", _ms(r.latency_ms["p50"]),
            _ms(r.latency_ms["p99"]), _ms(r.latency_ms["max"]),
            "-" if r.lag_slope is None else f"{r.lag_slope:+.3f}",
            "-" if r.lag_end_s is None else f"{r.lag_end_s:.2f}",
            f"{r.cpu_us_per_call['worker']:,.0f}", f"{r.cpu_us_per_call['broker']:,.0f}",
            str(r.dead_letters), f"{statistics.fmean(r.load_avg):.1f}" if r.load_avg else "-",
            "yes" if r.sustained else "no",
        )
    console.print(table)
    best = max((r for r in results if r.sustained), key=lambda r: r.rate, default=None)
    if best is None:
        console.print("highest sustained rate: none of those run")
    else:
        console.print(f"highest sustained rate: {best.rate:,.0f} calls/s, revocation p99 "
                      f"{_ms(best.latency_ms['p99'])} ms")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,300,1000,2000",
                        help="tool calls per second, comma-separated, run in increasing order")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--violation-every", type=int, default=200)
    parser.add_argument("--calls-per-task", type=int, default=10)
    parser.add_argument("--agents", type=int, default=150)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds at the first rate, "
                        "not reported")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds to wait after a rate for its verdicts and revocations")
    parser.add_argument("--max-slope", type=float, default=0.02,
                        help="verdict lag growth (s/s) under which a rate counts as sustained")
    parser.add_argument("--all", action="store_true", help="run every rate even after one "
                        "that is not sustained")
    parser.add_argument("--port", type=int, default=0, help="local broker port (0: any free)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the worker, e.g. PRODUCER_LINGER=0.005")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--against", default=None, metavar="REF",
                        help="also run a worker of this commit (a git worktree), each rate "
                             "interleaved with this tree's, on the same broker")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep broker data and the worker's log here (default: temporary)")
    args = parser.parse_args(argv)
    args.rates = sorted(float(r) for r in args.rates.split(",") if r.strip())
    pairs = [item.split("=", 1) for item in args.worker_env]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("--worker-env takes NAME=VALUE")
    args.worker_env = dict(pairs)
    return args


@contextlib.contextmanager
def session(tree: Path, broker: localkafka.LocalKafka, run_dir: Path, tag: str,
            args: argparse.Namespace, key: Any, jwks: Path) -> Iterator[Rig]:
    """Fresh topics, a worker of ``tree`` and a subscriber; stopped (by pid) at the end."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        # the broker stamps every record (LogAppendTime): it times each stage
        recreate_topics(admin, dict.fromkeys(TOPICS.values(), LOG_APPEND), args.partitions)
    finally:
        admin.close()
    port = localkafka.free_port()
    url = f"http://127.0.0.1:{port}"
    worker = WorkerProcess(f"intentwatch worker ({tag})", "intentwatch.pipeline.worker", {
        "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1",  # the tree's code, not the cwd's
        "INTENTWATCH_BOOTSTRAP": broker.bootstrap, "INTENTWATCH_APP_ID": f"bench-latency-{tag}",
        "INTENTWATCH_PARTITIONS": str(args.partitions), "INTENTWATCH_WEB_PORT": str(port),
        "INTENTWATCH_DATA_DIR": str(run_dir / tag), "INTENTWATCH_KEYS_DIR": str(run_dir / "keys"),
        "INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks), "INTENTWATCH_ISSUER": ISSUER,
        "INTENTWATCH_AUDIENCE": AUDIENCE, "INTENTWATCH_LOG_LEVEL": "warning", **args.worker_env,
    }, run_dir / f"worker-{tag}.log")
    spawn = multiprocessing.get_context("spawn")
    received, ready, stop = spawn.Queue(), spawn.Event(), spawn.Event()
    subscriber = None
    try:
        wait_ready(worker, url)
        subscriber = spawn.Process(target=subscribe, name="revocation-subscriber", args=(
            broker.bootstrap, f"{url}/.well-known/jwks.json", received, ready, stop))
        subscriber.start()
        if not ready.wait(60) or subscriber.pid is None:
            raise SystemExit("the revocation subscriber did not start")
        pids = {"worker": worker.pid, "broker": broker.pid, "subscriber": subscriber.pid,
                "load generator": os.getpid()}
        publisher = TelemetryPublisher(broker.bootstrap)
        verdicts = Records(broker.bootstrap, TOPICS["verdicts"], args.partitions)
        dead_letters = Records(broker.bootstrap, TOPICS["dlq"], args.partitions)
        try:
            yield Rig(broker.bootstrap, publisher, key, verdicts, dead_letters, received, pids)
        finally:
            publisher.close()
            verdicts.close()
            dead_letters.close()
    finally:
        stop.set()
        if subscriber is not None:
            subscriber.join(15)
            if subscriber.is_alive():
                subscriber.terminate()
        worker.stop()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    info = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine(),
            "cpus_usable": sorted(os.sched_getaffinity(0))}
    this = git("rev-parse", "--short", "HEAD") + ("+changes" if git(
        "status", "--porcelain", "--untracked-files=no") else "")
    results: dict[str, list[RateResult]] = {}
    with tempfile.TemporaryDirectory(prefix="intentwatch-latency-") as tmp:
        run_dir = Path(tmp) if args.workdir is None else args.workdir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        trees = {f"this tree ({this})": ROOT}
        if args.against:
            other = run_dir / "against"
            git("worktree", "add", "--detach", str(other), args.against)
            trees[f"{args.against} ({git('rev-parse', '--short', args.against)})"] = other
        key = generate_key()
        jwks = run_dir / "issuers.json"
        jwks.write_text(json.dumps({"issuers": {BROKER: {"keys": [key.public_jwk()]}}}))
        try:
            with local_broker(args.port, run_dir / "kafka") as broker:
                console.print(f"broker {broker.bootstrap} (pid {broker.pid}); load generator "
                              f"pid {os.getpid()}; all on the same {len(info['cpus_usable'])} "
                              "CPUs, unpinned, beside whatever else the machine runs")
                going = dict.fromkeys(trees, True)
                for i, rate in enumerate(args.rates):
                    order = list(trees) if i % 2 == 0 else list(reversed(trees))
                    for name in (n for n in order if going[n]):
                        tag = f"{'t' if trees[name] == ROOT else 'a'}{rate:g}"
                        with session(trees[name], broker, run_dir, tag, args, key, jwks) as rig:
                            if args.warmup > 0:
                                warm = argparse.Namespace(**{**vars(args),
                                                             "duration": args.warmup})
                                run_rate(rate, warm, rig, f"w{tag}")
                            result = run_rate(rate, args, rig, tag)
                        results.setdefault(name, []).append(result)
                        console.print(
                            f"{name}, {rate:,.0f} calls/s: p50 {_ms(result.latency_ms['p50'])} "
                            f"ms, p99 {_ms(result.latency_ms['p99'])} ms, verdict lag "
                            f"{result.lag_end_s} s, "
                            f"{'sustained' if result.sustained else 'NOT sustained'}")
                        going[name] = result.sustained or args.all
        finally:
            if args.against:
                git("worktree", "remove", "--force", str(run_dir / "against"))
    for name, rates in results.items():
        report(name, rates)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "what": "violating tool call due → verified revocation at a RevocationSubscriber, "
                "open-loop load on one worker",
        "how": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "trees": {name: [asdict(r) for r in rates] for name, rates in results.items()},
    }, indent=2, default=str) + "\n")
    console.print(f"results: {args.output}")


if __name__ == "__main__":
    main()
