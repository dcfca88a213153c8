"""The same results through crashes (real broker, real worker processes, SIGKILL).

One input log (a fleet's grants, calls and task ends, then the workers' ticks) is read
twice, by two consumer groups: once by a worker that runs to the end, once by a worker
killed with SIGKILL five times while it reads and started again each time. Both read
the same records (the log, ticks included, is the input), so what the second says must
be what the first said: a verdict for every call with the same decision, each duplicate
identical, the same (task, reason) revocations under the same ids, the same audits.

``INTENTWATCH_CRASH_CALLS`` sets the number of calls (default 1,200); the first test
prints what it measured. Processing is at least once: records read after the last
offset commit are processed again after a crash, from tables that already hold their
effects; a call its task has judged already gets that verdict again (the task's state
keeps its calls' verdicts, a tombstone for a minute of stream time), and is not counted
or learned twice. An open task's detector state (its context, risk, scored calls) is
part of its state in the ``open`` table, so a task's later calls, and a call read again
from the state before it, score as without the crash. Known open (the second test,
xfail): one record's table writes go to six changelog topics through faust's producer
buffer, its outputs to the producer directly; a SIGKILL loses what the buffer still held,
so the tables may keep part of a record's writes (a task's tombstone without the
``learned`` writes, flushed last, of its agent's state and its partition's population):
the task's end read again finds it ended, its learning is never applied, and that agent's
(or the fleet's) later scores differ. And a record processed again whose outputs were
published already publishes them again: identical duplicate verdicts, and an audit twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from intentwatch.contracts import KIND_HEADER, TOPICS, encode
from intentwatch.pipeline.app import worker_topics
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.topics import ensure_topics
from intentwatch.tokens.grants import sign_grant
from intentwatch.tokens.keys import unverified_payload
from tests.conftest import RunningWorker, topic_partitions, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(3600)]

CALLS = int(os.environ.get("INTENTWATCH_CRASH_CALLS", "1200"))
KILLS = 5
ROLES = ("support", "billing", "research", "ops")
OUTPUTS = ("verdicts", "revocations", "audit")


@dataclass
class Fleet:
    """The input: records in log order, and what they are."""

    records: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(kind, agent, value)."""
    calls: set[str] = field(default_factory=set)
    tasks: set[tuple[str, str]] = field(default_factory=set)


def fleet(issuer_key: Any, calls: int, seed: int = 7) -> Fleet:
    """Agents of four roles doing short CRM tasks, interleaved: most complete or fail,
    some are left to expire, a few calls leave their grant or look unusual."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    agents = [f"spiffe://acme.org/agents/{ROLES[i % 4]}/{run}-{i}" for i in range(48)]
    made, now = Fleet(), time.time()
    open_tasks: dict[str, list[Any]] = {}
    serial = 0
    while len(made.calls) < calls:
        agent = rng.choice(agents)
        task = open_tasks.get(agent)
        if task is None:
            serial += 1
            task_id = f"t{serial}"
            expires = rng.random() < 0.1
            payload = {
                "grant_id": f"g-{serial}", "agent_id": agent, "task_id": task_id,
                "credential_ids": [f"c-{serial}"],
                "intent": "look up the customer's orders in the CRM and note the answer",
                "tools": ["crm.*"], "targets": ["crm://*", "*.acme.org"],
                "data_labels": ["internal"], "issued_at": now,
                "expires_at": now + (20.0 if expires else 3600.0),
                "issuer": "https://broker.acme.org",
            }
            # the task runner says it started: the partition has a stream time before
            # its first grant is read (else that grant is judged at the wall clock)
            made.records.append(("task", agent, encode({
                "event_id": f"start-{task_id}", "ts": now, "agent_id": agent,
                "task_id": task_id, "status": "started"})))
            made.records.append(("grant", agent, sign_grant(payload, issuer_key).encode()))
            made.tasks.add((agent, task_id))
            task = open_tasks[agent] = [task_id, rng.randint(2, 8), expires]
            continue
        task_id, left, expires = task
        if left == 0:
            del open_tasks[agent]
            if not expires:
                status = "failed" if rng.random() < 0.05 else "completed"
                made.records.append(("task", agent, encode({
                    "event_id": f"end-{task_id}", "ts": now, "agent_id": agent,
                    "task_id": task_id, "status": status})))
            continue
        task[1] -= 1
        event_id = f"{run}-{len(made.calls)}"
        roll = rng.random()
        tool, target = "crm.lookup_customer", f"crm://c-{rng.randint(1, 30)}"
        if roll < 0.01:
            tool = "iam.update_user_password"  # outside the grant
        elif roll < 0.02:
            target = f"https://files.example/{rng.randint(1, 9)}"  # outside the grant
        elif roll < 0.2:
            tool = "crm.add_note"
        made.records.append(("toolcall", agent, encode({
            "event_id": event_id, "ts": now, "agent_id": agent, "task_id": task_id,
            "tool": tool, "credential_id": f"c-{task_id[1:]}", "target": target,
            "data_labels": ["internal"], "bytes_out": rng.randint(100, 2000)})))
        made.calls.add(event_id)
    for agent, (task_id, _, expires) in open_tasks.items():  # the rest end now
        if not expires:
            made.records.append(("task", agent, encode({
                "event_id": f"end-{task_id}", "ts": now, "agent_id": agent,
                "task_id": task_id, "status": "completed"})))
    return made


class Outputs:
    """What the workers published for the fleet's agents, by topic, with positions."""

    def __init__(self, bootstrap: str, agents: set[str]) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       isolation_level="read_committed", fetch_max_wait_ms=100)
        parts = [TopicPartition(TOPICS[name], p) for name in OUTPUTS
                 for p in self._consumer.partitions_for_topic(TOPICS[name]) or ()]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning()
        self._agents = {agent.encode() for agent in agents}
        self.seen: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)

    def poll(self) -> None:
        for tp, batch in self._consumer.poll(timeout_ms=200, max_records=20000).items():
            name = next(n for n in OUTPUTS if TOPICS[n] == tp.topic)
            for record in batch:
                if record.key in self._agents:
                    self.seen[name].append((tp.partition, record.offset, _value(name, record)))

    def ends(self) -> dict[tuple[str, int], int]:
        """The end offset of every output partition now."""
        tps = self._consumer.assignment()
        return {(tp.topic, tp.partition): end for tp, end in self._consumer.end_offsets(
            list(tps)).items()}

    def split(self, ends: dict[tuple[str, int], int]) -> tuple[Run, Run]:
        """What was published before ``ends``, and after."""
        before, after = Run(), Run()
        for name, records in self.seen.items():
            for partition, offset, value in records:
                run = before if offset < ends[(TOPICS[name], partition)] else after
                run.add(name, value)
        return before, after

    def count(self, name: str) -> int:
        return len(self.seen[name])

    def close(self) -> None:
        self._consumer.close()


def _value(name: str, record: Any) -> Any:
    if name == "revocations":
        return json.loads(unverified_payload(record.value) or b"{}")
    return json.loads(record.value)


@dataclass
class Run:
    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    revocations: list[dict[str, Any]] = field(default_factory=list)
    audits: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list))

    def add(self, name: str, value: Any) -> None:
        if name == "verdicts":
            self.verdicts[value["event_id"]].append(value)
        elif name == "revocations":
            self.revocations.append(value)
        else:
            self.audits[(value["agent_id"], value["task_id"])].append(value)

    def revoked(self) -> dict[tuple[str, str], str]:
        """(task, reason) -> revocation id, as first sent."""
        found: dict[tuple[str, str], str] = {}
        for claims in self.revocations:
            key = (claims["txn"], claims["intentwatch"]["reason_code"])
            found.setdefault(key, claims["jti"])
        return found


def _audit(audit: dict[str, Any], *, score: bool = True) -> dict[str, Any]:
    return {k: v for k, v in audit.items() if score or k != "max_score"}


def publish(bootstrap: str, made: Fleet) -> None:
    partitions = topic_partitions(bootstrap, TOPICS["events"])
    ensure_topics(bootstrap, worker_topics(Settings(bootstrap=bootstrap, partitions=partitions)))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for partition in range(partitions):  # the log says when it was written: grants are
            producer.send(TOPICS["events"], value=b"", partition=partition,  # judged then,
                          headers=[(KIND_HEADER, b"tick")])  # never at a reader's wall clock
        for kind, agent, value in made.records:
            producer.send(TOPICS["events"], key=agent.encode(), value=value,
                          headers=[(KIND_HEADER, kind.encode())])
        producer.flush(timeout=120)
    finally:
        producer.close()


def finished(outputs: Outputs, made: Fleet, base: int, audits: int) -> bool:
    outputs.poll()
    return outputs.count("audit") - audits >= len(made.tasks) and outputs.count(
        "verdicts") - base >= len(made.calls)


@dataclass
class Runs:
    made: Fleet
    first: Run
    """What the uninterrupted worker published."""
    second: Run
    """What the worker killed five times published."""
    took: float
    crashed_took: float


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, issuer_key: Any, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp_path = tmp_path_factory.mktemp("crash")
    made = fleet(issuer_key, CALLS)
    agents = {agent for _, agent, _ in made.records}
    publish(kafka_bootstrap, made)
    outputs = Outputs(kafka_bootstrap, agents)
    quick = {"INTENTWATCH_POPULATION_SECONDS": "0"}
    homes = iter(tmp_path / f"w{i}" for i in range(KILLS + 2))

    def start(app_id: str) -> RunningWorker:
        home = next(homes)
        home.mkdir()
        return RunningWorker(kafka_bootstrap, home, issuer_key, app_id=app_id, settings=quick,
                             catch_up=False)

    started = time.monotonic()
    whole = start(f"iw-whole-{uuid.uuid4().hex[:6]}")
    try:
        wait_for(lambda: finished(outputs, made, 0, 0), bool, 900, "the uninterrupted run")
    finally:
        whole.close()
        whole.stop()
    took = time.monotonic() - started
    print(f"\nuninterrupted run: {took:.0f} s")
    ends = outputs.ends()
    outputs.poll()
    base, audits = outputs.count("verdicts"), outputs.count("audit")

    started = time.monotonic()
    app_id = f"iw-crash-{uuid.uuid4().hex[:6]}"
    worker = start(app_id)
    try:
        for kill in range(1, KILLS + 1):  # kill at each sixth of the calls judged
            wait_for(lambda k=kill: (outputs.poll(), outputs.count("verdicts") - base)[1],
                     lambda judged, k=kill: judged >= k * len(made.calls) // (KILLS + 1),
                     900, f"the crashing run to judge {kill}/{KILLS + 1} of the calls")
            worker.close()
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=30)
            worker = start(app_id)
            print(f"killed {kill}: {time.monotonic() - started:.0f} s")
        wait_for(lambda: finished(outputs, made, base, audits), bool, 900, "the crashing run")
        worker.wait_caught_up(len(worker.status()["partitions"]))  # duplicates come by now
        outputs.poll()
    finally:
        worker.close()
        worker.stop()
        outputs.close()
    crashed_took = time.monotonic() - started

    first, second = outputs.split(ends)
    return Runs(made, first, second, took, crashed_took)


def test_after_five_sigkills_every_call_has_a_verdict_and_the_same_revocations(
    runs: Runs,
) -> None:
    made, first, second = runs.made, runs.first, runs.second
    without = made.calls - set(second.verdicts)
    duplicated = {e: v for e, v in second.verdicts.items() if len(v) > 1}
    differing = [e for e, v in duplicated.items()
                 if len({json.dumps(x, sort_keys=True) for x in v}) > 1]
    differing_decision = [e for e, v in duplicated.items() if len({x["decision"] for x in v}) > 1]
    decisions = [e for e in made.calls if second.verdicts.get(e) and first.verdicts.get(e)
                 and second.verdicts[e][0]["decision"] != first.verdicts[e][0]["decision"]]
    scores = [e for e in made.calls if second.verdicts.get(e) and first.verdicts.get(e)
              and second.verdicts[e][0]["score"] != first.verdicts[e][0]["score"]]
    revoked_first, revoked_second = first.revoked(), second.revoked()
    extra = Counter(r for _, r in set(revoked_second) - set(revoked_first))
    missing = Counter(r for _, r in set(revoked_first) - set(revoked_second))
    sent_twice = sum(n - 1 for n in Counter(c["jti"] for c in second.revocations).values())
    audit_diff = [t for t in made.tasks if first.audits[t][:1] != second.audits[t][:1]]
    audit_diff_unscored = [t for t in audit_diff
                           if [_audit(a, score=False) for a in first.audits[t][:1]]
                           != [_audit(a, score=False) for a in second.audits[t][:1]]]
    audits_twice = sum(len(a) - 1 for a in second.audits.values() if len(a) > 1)
    print(f"\ncrash equivalence: {len(made.calls)} calls, {len(made.tasks)} tasks, "
          f"{KILLS} SIGKILLs; uninterrupted {runs.took:.0f} s, crashing "
          f"{runs.crashed_took:.0f} s\n"
          f"  calls without verdict {len(without)}; duplicate verdicts {len(duplicated)} "
          f"({len(differing)} differing, {len(differing_decision)} in decision)\n"
          f"  first verdicts with another decision {len(decisions)}, another score "
          f"{len(scores)}\n"
          f"  revocations: extra {dict(extra)}, missing {dict(missing)}, "
          f"sent again {sent_twice}\n"
          f"  audits differing {len(audit_diff)} ({len(audit_diff_unscored)} in more than "
          f"the max score), written again {audits_twice}")

    print(f"  what differs, by cause: duplicates {_causes(duplicated.values())}; first "
          f"verdicts {_causes([first.verdicts[e][0], second.verdicts[e][0]] for e in scores)}")

    assert not without
    assert revoked_second == revoked_first  # the same (task, reason)s, the same ids


_TASK = frozenset({"rate", "task_risk", "tool_repeats", "target_repeats", "task_bytes_out",
                   "evidence", "payload_growth", "novel_source", "transition_rarity"})
"""Components that follow from the task's own state (its earlier calls)."""


def _causes(groups: Any) -> dict[str, int]:
    """Differing verdicts of one call, counted by what differs: the learned history of the
    agent, role or fleet (``history_*``: a table write of learning lost or doubled), the
    shared model only (``hst``), the task's own state only, or other components."""
    found: Counter[str] = Counter()
    for verdicts in groups:
        if len({json.dumps(v, sort_keys=True) for v in verdicts}) < 2:
            continue
        a, b = verdicts[0]["components"], verdicts[-1]["components"]
        changed = {name for name in set(a) | set(b) if a.get(name) != b.get(name)}
        changed -= {"call_risk"}
        if "history_agent_calls" in changed:
            found["learned history: agent"] += 1
        elif any(name.startswith("history_") for name in changed):
            found["learned history: role or fleet"] += 1
        elif changed <= {"hst"} and changed:
            found["shared model"] += 1
        elif changed and changed <= _TASK:
            found["task state"] += 1
        else:
            found["other: " + ",".join(sorted(changed))[:80]] += 1
    return dict(found)


@pytest.mark.xfail(strict=False, reason="at least once: a SIGKILL may keep part of a record's "
                   "table writes (a tombstone without its agent's learned state) and outputs "
                   "are published again with the record (1,200 calls, 5 runs: duplicates "
                   "205-351, differing 0-4, none in decision; first verdicts of another score "
                   "0-189, most with another learned history; audits written twice 4-8 in "
                   "every run)")
def test_after_five_sigkills_every_verdict_and_audit_is_the_uninterrupted_runs(
    runs: Runs,
) -> None:
    first, second = runs.first, runs.second
    for event_id, verdicts in second.verdicts.items():
        assert all(v == first.verdicts[event_id][0] for v in verdicts)
    assert all(second.audits[t] == first.audits[t][:1] for t in runs.made.tasks)
