"""Failover time: a worker is SIGKILLed; how long until its partitions are judged again.

A local Kafka broker (:mod:`intentwatch.local.kafka_broker`) and real worker processes
(``python -m intentwatch.pipeline.worker``, RocksDB tables) run on this machine; the
load is the real SDK (:class:`~intentwatch.TelemetryPublisher`). Two cases:

- ``survivor``: two workers share a consumer group; one, which has learned an agent's
  habits (three tasks), is killed; the other takes its partitions.
- ``restart``: one worker learns the agent's habits, is killed and started again at
  once on its own data dir (as a supervisor such as Kubernetes would).

After the kill a call of that agent is published every 100 ms. Per run it reports, in
seconds after the kill (``time.time()`` just before ``SIGKILL``; every process runs on
this machine, so one clock): when the judging worker heard of the rebalance (its log),
when its group was synced, when the dead worker's partitions were assigned to it
(``assigned partitions`` in its log, the input partitions it then owns including the
agent's), when its tables were recovered, and when the first verdict of a call published
after the kill was produced (the verdict record's timestamp, set by the worker's
producer); and whether the learned state moved intact (a benign call published before
and after the kill scores the same, components too). The worker logs' timestamps have
millisecond resolution.

Variants are sets of ``INTENTWATCH_*`` settings; each round runs every variant and case
once, one after the other, the order rotating each round, so a noisy machine (it is
shared) affects each alike; the report gives the median and range over the rounds and
the machine's load average. Run ``python -m bench.failover --help``. Results go to
``bench/results/failover.json``. The benchmark reports; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.throughput import console, local_broker, machine
from intentwatch import TelemetryPublisher
from intentwatch.contracts import TOPICS
from intentwatch.local.processes import wait_for
from intentwatch.local.worker import WorkerProcess
from intentwatch.pipeline.app import agent_partition
from intentwatch.tokens.grants import sign_grant
from intentwatch.tokens.keys import generate_key

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "failover.json"
ISSUER, AUDIENCE = "urn:intentwatch:bench", "urn:bench:brokers"
ROLE = "spiffe://acme.org/agents/support"
CASES = ("survivor", "restart")
VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "standby0": {"INTENTWATCH_STANDBY_REPLICAS": "0"},
    "standby1": {"INTENTWATCH_STANDBY_REPLICAS": "1"},
}
"""Named settings (``--variants``); ``--set`` adds others."""
PHASES = {
    "rebalance": ("Heartbeat failed for group", "(Re-)joining group"),
    "synced": ("Successfully synced group",),
    "assigned": ("assigned partitions [",),
    "recovered": ("grants recovered for partitions",),
}
"""Phase → the first worker log line after the kill that marks it (any of these)."""


class Records:
    """An output topic from its beginning: each agent's records (value, timestamp)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       fetch_max_wait_ms=100)
        partitions = wait_for(lambda: self._consumer.partitions_for_topic(topic), bool, 60,
                              topic)
        self._consumer.assign([TopicPartition(topic, p) for p in partitions])
        self._consumer.seek_to_beginning()
        self._by_key: dict[bytes, list[tuple[dict[str, Any], float]]] = {}

    def of(self, agent: str) -> list[tuple[dict[str, Any], float]]:
        """``agent``'s records: (value, timestamp in epoch seconds), after one short poll."""
        for batch in self._consumer.poll(timeout_ms=100).values():
            for record in batch:
                self._by_key.setdefault(record.key, []).append(
                    (json.loads(record.value), record.timestamp / 1000))
        return list(self._by_key.get(agent.encode(), []))

    def verdicts(self, agent: str) -> dict[str, tuple[dict[str, Any], float]]:
        """Of the verdict topic: event id → (verdict, its timestamp)."""
        return {v["event_id"]: (v, at) for v, at in self.of(agent)}

    def close(self) -> None:
        self._consumer.close()


def log_times(log_file: Path, after: float, partition: int) -> dict[str, float]:
    """Phase → epoch seconds of its first line in ``log_file`` at or after ``after``
    (``assigned``: the first assignment holding ``partition``)."""
    found: dict[str, float] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        if not line.startswith("[20"):
            continue
        try:
            at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if at < after - 0.001:
            continue
        for phase, marks in PHASES.items():
            if phase in found or not any(mark in line for mark in marks):
                continue
            if phase == "assigned":
                owned = line.split("assigned partitions [", 1)[1].split("]", 1)[0]
                if str(partition) not in {p.strip() for p in owned.split(",")}:
                    continue
            if phase == "recovered" and "assigned" not in found:
                continue
            found[phase] = at
    return found


@dataclass
class Run:
    case: str
    variant: str
    round: int
    after_kill_s: dict[str, float | None] = field(default_factory=dict)
    """Phase → seconds after the kill; ``first_verdict`` included."""
    calls_after_kill: int = 0
    judged_after_kill: int = 0
    state_intact: bool | None = None
    """Whether the benign call scored the same before and after the kill."""
    differing: dict[str, list[Any]] = field(default_factory=dict)
    """Score components (and the score) that differ: name → [before, after]."""
    load_avg: list[float] = field(default_factory=list)
    error: str | None = None


class Scenario:
    """One run: workers, an agent that learns, the kill, the calls after it."""

    def __init__(self, bootstrap: str, key: Any, jwks: Path, home: Path, case: str,
                 variant: str, settings: dict[str, str], outputs: dict[str, Records]) -> None:
        self.bootstrap, self.key, self.jwks, self.home = bootstrap, key, jwks, home
        self.case, self.variant, self.settings, self.outputs = case, variant, settings, outputs
        self.app_id = f"iw-fo-{uuid.uuid4().hex[:8]}"
        self.workers: list[WorkerProcess] = []
        self.publisher = TelemetryPublisher(bootstrap)

    def start(self, name: str, home: str | None = None) -> WorkerProcess:
        """A worker logging to ``name``'s folder, its data and keys in ``home``'s
        (default: the same folder)."""
        state = self.home / (home or name)
        env = {
            "INTENTWATCH_DATA_DIR": str(state / "data"),
            "INTENTWATCH_KEYS_DIR": str(state / "keys"),
            "INTENTWATCH_APP_ID": self.app_id,
            "INTENTWATCH_GRANT_ISSUERS_JWKS": str(self.jwks),
            "INTENTWATCH_ISSUER": ISSUER, "INTENTWATCH_AUDIENCE": AUDIENCE,
            "INTENTWATCH_LOG_LEVEL": "info", "INTENTWATCH_POPULATION_SECONDS": "0.1",
            **self.settings,
        }
        worker = WorkerProcess.start(self.bootstrap, self.home / name, env=env)
        self.workers.append(worker)
        return worker

    def grant(self, agent: str, task: str) -> str:
        now = time.time()
        tail = agent.rsplit("/", 1)[1]
        return sign_grant({
            "grant_id": f"g-{tail}-{task}", "agent_id": agent, "task_id": task,
            "credential_ids": [f"c-{tail}-{task}"],
            "intent": "look up customer c-42 in the CRM and answer ticket 42",
            "tools": ["crm.*"], "targets": ["crm://*"], "data_labels": ["internal"],
            "issued_at": now, "expires_at": now + 3600, "issuer": "https://broker.acme.org",
        }, self.key)

    def call(self, agent: str, task: str, n: int, target: str = "crm://c-42") -> str:
        return self.publisher.publish_toolcall({
            "event_id": f"{task}-call-{n}", "agent_id": agent, "task_id": task,
            "tool": "crm.lookup_customer", "credential_id": f"c-{agent.rsplit('/', 1)[1]}-{task}",
            "target": target, "data_labels": ["internal"],
        }).event_id

    def verdict(self, agent: str, event_id: str) -> dict[str, Any]:
        return wait_for(lambda: self.outputs["verdicts"].verdicts(agent).get(event_id), bool, 120,
                        f"the verdict of {event_id}")[0]

    def run(self, round_: int) -> Run:
        result = Run(self.case, self.variant, round_)
        first = self.start("a")
        first.wait_ready()
        if self.case == "survivor":
            second = self.start("b")
            second.wait_ready()
            wait_for(lambda: [w.status()["partitions"] for w in (first, second)],
                     lambda got: all(got) and not set(got[0]) & set(got[1]), 120,
                     "the partitions to be split")
        owned = first.status()["partitions"]
        partitions = len(input_partitions(self.bootstrap))
        agent = next(a for a in (f"{ROLE}/{uuid.uuid4().hex[:10]}" for _ in range(1000))
                     if agent_partition(a, partitions) in owned)
        for k in range(3):
            task = f"learn{k}"
            self.publisher.publish_grant(self.grant(agent, task))
            for n in range(4):
                self.call(agent, task, n, f"crm://c-4{n}")
            self.publisher.publish_task_event(
                {"agent_id": agent, "task_id": task, "status": "completed"})
        self.publisher.flush()
        wait_for(lambda: self.outputs["audit"].of(agent), lambda got: len(got) >= 3, 120,
                 "the three tasks' audits (each task learned as it ended)")
        learned = first.status()["learned"]["learned_calls"]
        wait_for(lambda: first.status()["learned"]["kept_calls"], lambda n: n >= learned, 60,
                 "the population state to be written")
        self.publisher.publish_grant(self.grant(agent, "before"))
        before = self.verdict(agent, self.call(agent, "before", 0, "crm://c-41"))
        self.publisher.publish_grant(self.grant(agent, "t1"))
        self.publisher.flush()
        killed = time.time()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        judge = second if self.case == "survivor" else self.start("a-restarted", home="a")
        published: dict[str, float] = {}
        n = 0
        while True:
            published[self.call(agent, "t1", n)] = time.time()
            self.publisher.flush()
            n += 1
            judged = self.outputs["verdicts"].verdicts(agent)
            after = [at for event_id, (_, at) in judged.items() if event_id in published]
            if after:
                break
            if time.time() - killed > 180:
                raise TimeoutError("no verdict within 180 s of the kill")
            time.sleep(0.1)
        result.after_kill_s["first_verdict"] = round(min(after) - killed, 3)
        judged_ids = wait_for(lambda: set(self.outputs["verdicts"].verdicts(agent)),
                              lambda got: got >= set(published), 120, "a verdict for every call")
        result.calls_after_kill = len(published)
        result.judged_after_kill = len(judged_ids & set(published))
        self.publisher.publish_grant(self.grant(agent, "after"))
        later = self.verdict(agent, self.call(agent, "after", 0, "crm://c-41"))
        result.state_intact = ((later["score"], later["components"])
                               == (before["score"], before["components"]))
        was = {"score": before["score"], **before["components"]}
        now = {"score": later["score"], **later["components"]}
        result.differing = {name: [was.get(name), now.get(name)] for name in sorted(
            set(was) | set(now)) if was.get(name) != now.get(name)}
        times = log_times(judge.log_file, killed, agent_partition(agent, partitions))
        for phase in PHASES:
            at = times.get(phase)
            result.after_kill_s[phase] = None if at is None else round(at - killed, 3)
        result.load_avg = [round(x, 2) for x in os.getloadavg()]
        return result

    def stop(self) -> None:
        self.publisher.close()
        for worker in self.workers:
            if worker.alive():
                worker.stop()


def input_partitions(bootstrap: str) -> set[int]:
    """The input topic's partitions."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.partitions_for_topic(TOPICS["events"]) or set()
    finally:
        consumer.close()


def summary(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Per case and variant, per phase: median, min, max over the runs that finished."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        out.setdefault(f"{run.case}/{run.variant}", {"runs": [], "errors": 0})
        entry = out[f"{run.case}/{run.variant}"]
        if run.error:
            entry["errors"] += 1
        else:
            entry["runs"].append(run)
    for entry in out.values():
        done: list[Run] = entry.pop("runs")
        entry["rounds"] = len(done)
        entry["state_intact"] = sum(bool(r.state_intact) for r in done)
        for phase in ("rebalance", "synced", "assigned", "recovered", "first_verdict"):
            values = [v for r in done if (v := r.after_kill_s.get(phase)) is not None]
            entry[phase] = ({"median": round(statistics.median(values), 2),
                             "min": round(min(values), 2), "max": round(max(values), 2)}
                            if values else None)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default="defaults",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--set", action="append", default=[], metavar="VARIANT:NAME=VALUE",
                        help="a variant of your own, e.g. hb05:INTENTWATCH_X=1 (repeatable)")
    parser.add_argument("--bootstrap", help="an existing broker, else a local one is started")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", type=Path,
                        help="where the broker and workers keep their data and logs "
                             "(kept), else a temporary folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    variants = {name: dict(VARIANTS[name]) for name in args.variants.split(",") if name}
    for item in args.set:
        name, setting = item.split(":", 1)
        key, value = setting.split("=", 1)
        variants.setdefault(name, {})[key] = value
    cases = [c for c in args.cases.split(",") if c]
    runs: list[Run] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with contextlib.ExitStack() as stack:
        home = args.work_dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="iw-failover-")))
        home.mkdir(parents=True, exist_ok=True)
        key = generate_key("EdDSA")
        jwks = home / "issuers.jwks.json"
        jwks.write_text(json.dumps({"keys": [key.public_jwk()]}))
        with local_broker(0, home / "kafka") as broker:
            bootstrap = args.bootstrap or broker.bootstrap
            outputs = _outputs(bootstrap, home, jwks)
            order = [(case, name) for name in variants for case in cases]
            for round_ in range(args.rounds):
                shift = round_ % len(order)
                for case, name in order[shift:] + order[:shift]:
                    scenario = Scenario(bootstrap, key, jwks, home / f"r{round_}-{case}-{name}",
                                        case, name, variants[name], outputs)
                    try:
                        run = scenario.run(round_)
                    except Exception as error:  # a failed run is reported, the rest go on
                        run = Run(case, name, round_, error=f"{type(error).__name__}: {error}")
                    finally:
                        scenario.stop()
                    runs.append(run)
                    write_results(args.output, started, variants, runs)  # each run, kept
                    console.print(f"round {round_} {case:8} {name:10} {run.after_kill_s} "
                                  f"intact={run.state_intact} load={run.load_avg} "
                                  f"{run.error or ''}")
            for records in outputs.values():
                records.close()
    console.print(json.dumps(summary(runs), indent=2))


def write_results(path: Path, started: str, variants: dict[str, dict[str, str]],
                  runs: Sequence[Run]) -> None:
    """Write the runs so far, their summary and how they were measured to ``path``."""
    data = {
        "what": "SIGKILL of a worker → its partitions judged again (seconds after the kill)",
        "how": __doc__.split("\n\n", 1)[1].split("\n\nVariants", 1)[0].replace("\n", " "),
        "machine": {"started_at": started, **machine()},
        "variants": variants,
        "summary": summary(runs),
        "runs": [asdict(run) for run in runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _outputs(bootstrap: str, home: Path, jwks: Path) -> dict[str, Records]:
    """Start a worker once, so that the topics exist, then read the verdict and audit
    topics."""
    worker = WorkerProcess.start(bootstrap, home / "topics",
                                 env={"INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks)})
    try:
        worker.wait_ready()
    finally:
        worker.stop()
    return {name: Records(bootstrap, TOPICS[name]) for name in ("verdicts", "audit")}


if __name__ == "__main__":
    main()
