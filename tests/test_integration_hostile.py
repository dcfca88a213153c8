"""Hostile input against a real broker and a real worker process (issue 10).

Each test is one row of the issue's table: the attack, then what must hold. The raw
producer sends what the SDK would refuse to.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.producer.future import RecordMetadata

from intentwatch.contracts import KIND_HEADER, TOPICS, DeadLetterHeaders, encode
from intentwatch.sdk.subscriber import RejectedRevocation, RevocationSubscriber
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka

YEAR = 365 * 86400.0


@pytest.fixture(scope="module")
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    """A raw producer, for records the SDK would refuse to send."""
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2_000_000)
    yield raw
    raw.close()


def send(producer: KafkaProducer, kind: str, agent: str, value: bytes | None,
         timestamp: float | None = None, key: bytes | None = None) -> RecordMetadata:
    timestamp_ms = int(timestamp * 1000) if timestamp is not None else None
    return producer.send(TOPICS["events"], key=key or agent.encode(), value=value,
                         headers=[(KIND_HEADER, kind.encode())],
                         timestamp_ms=timestamp_ms).get(timeout=30)


def call(agent: str, task: str = "t1", **fields: Any) -> bytes:
    """A tool call the grant of :meth:`RunningWorker.grant` allows, unless ``fields`` say else."""
    return encode({
        "event_id": uuid.uuid4().hex, "ts": time.time(), "agent_id": agent, "task_id": task,
        "tool": "crm.lookup_customer", "credential_id": f"c-{agent.rsplit('/', 1)[1]}-{task}",
        "target": "crm://c-42", "data_labels": ["internal"], **fields,
    })


def task_end(agent: str, task: str = "t1", **fields: Any) -> bytes:
    return encode({"event_id": uuid.uuid4().hex, "ts": time.time(), "agent_id": agent,
                   "task_id": task, "status": "completed", **fields})


def verdicts(worker: RunningWorker, agent: str, count: int) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in worker.topics["verdicts"].of(agent, count)]


def letters(worker: RunningWorker, agent: str, count: int) -> dict[int, dict[str, bytes]]:
    """Dead letters for ``agent`` by source offset, each source offset exactly once."""
    found = worker.topics["dlq"].of(agent, count)
    by_source = [(int(dict(r.headers)[DeadLetterHeaders.SOURCE_OFFSET]),
                  dict(r.headers)[DeadLetterHeaders.SOURCE_TOPIC]) for r in found]
    assert len(set(by_source)) == len(by_source), "a record was dead-lettered twice"
    return {int(dict(r.headers)[DeadLetterHeaders.SOURCE_OFFSET]): dict(r.headers)
            for r in found}


def reason(letter: dict[str, bytes]) -> str:
    return letter[DeadLetterHeaders.ERROR_CLASS].decode()


def test_malformed_records_of_every_kind_are_dead_lettered_once_and_the_worker_goes_on(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 10: 30,000 malformed records of 88 kinds; 243 never dead-lettered (1 MB fields,
    year-10000 timestamps), 18 agent crashes, 835 tracebacks."""
    now = time.time()
    bad = {
        "not_json": (b'{"event_id": ', "toolcall"),
        "garbage": (bytes(range(256)), "toolcall"),
        "no_value": (None, "toolcall"),
        "missing_tool": (encode({"event_id": "x", "ts": now, "agent_id": agent,
                                 "task_id": "t1"}), "toolcall"),
        "spiffe_newline": (call(agent, agent_id=agent + "\n"), "toolcall"),
        "megabyte_field": (call(agent, args={"body": "x" * 1_000_000}), "toolcall"),
        "labels_65000": (call(agent, data_labels=[f"l{n}" for n in range(65_000)]),
                         "toolcall"),
        "year_10000": (call(agent, ts=253402300800), "toolcall"),
        "a_year_ahead": (call(agent, ts=now + YEAR), "toolcall"),
        "deep_nesting": (call(agent)[:-1] + b', "args": {"x": ' + b"[" * 50_000
                         + b"]" * 50_000 + b"}}", "toolcall"),
        "huge_number": (call(agent).replace(b'"ts":', b'"bytes_out": 1e999, "ts":'),
                        "toolcall"),
        "task_year_10000": (task_end(agent, ts=253402300800), "task"),
        "task_bad_status": (task_end(agent, status="paused"), "task"),
        "grant_garbage": (b"a.b.c", "grant"),
        "grant_megabyte": (b"e" * 1_000_000, "grant"),
    }
    sources = {}
    for name, (value, kind) in bad.items():
        for copy in range(3):
            sources[send(producer, kind, agent, value).offset, name, copy] = name
    send(producer, "grant", agent, worker.grant(agent).encode())
    send(producer, "toolcall", agent, call(agent, event_id="good"))

    [verdict] = verdicts(worker, agent, 1)
    assert (verdict["event_id"], verdict["decision"]) == ("good", "allow")
    got = worker.topics["dlq"].of(agent, len(sources), timeout=120)
    keys = [(dict(r.headers)[DeadLetterHeaders.SOURCE_TOPIC],
             int(dict(r.headers)[DeadLetterHeaders.SOURCE_OFFSET])) for r in got]
    assert len(got) == len(sources) == len(set(keys))  # each exactly once
    assert all(len(r.value) <= 64 * 1024 for r in got)
    assert worker.process.poll() is None
    log = worker.log_file.read_text(errors="replace")
    assert "Traceback" not in log and "crashed" not in log.lower()


def test_a_call_with_65000_labels_is_a_dead_letter_and_the_next_violation_is_revoked(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 2: a revoke verdict but no revocation ever published (the SET passed 1 MB)."""
    send(producer, "grant", agent, worker.grant(agent).encode())
    huge = send(producer, "toolcall", agent,
                call(agent, data_labels=[f"secret-{n}" for n in range(65_000)]))
    send(producer, "toolcall", agent, call(agent, tool="iam.update_user_password",
                                           target="https://evil.example/x"))

    [letter] = letters(worker, agent, 1).items()
    assert letter[0] == huge.offset and reason(letter[1]) == "too_large"
    [revocation] = worker.revocations(agent)
    assert revocation.reason_code == "intent_violation"
    assert [v["decision"] for v in verdicts(worker, agent, 1)] == ["revoke"]


def test_a_call_a_year_ahead_hides_no_grantless_task(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 3: 0 of its 22 calls judged, no revocation, ever."""
    now = time.time()
    first = send(producer, "toolcall", agent, call(agent, ts=now + YEAR))
    for n in range(21):
        send(producer, "toolcall", agent, call(agent, ts=now + n * 0.01))

    assert {v["reasons"][0]["code"] for v in verdicts(worker, agent, 21)} == {"no_grant"}
    assert worker.revocations(agent)[0].reason_code == "policy"
    [(offset, letter)] = letters(worker, agent, 1).items()
    assert offset == first.offset and reason(letter) == "timestamp_in_future"


def test_a_call_in_year_10000_does_not_keep_the_others_from_their_grant(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 4: the grant was dead-lettered with ValueError; the 6 normal calls never judged."""
    grant = worker.grant(agent)  # issued now, published after the calls
    send(producer, "toolcall", agent, call(agent, ts=253402300799))
    for _ in range(6):
        send(producer, "toolcall", agent, call(agent))
    send(producer, "grant", agent, grant.encode())

    assert [v["decision"] for v in verdicts(worker, agent, 6)] == ["allow"] * 6
    assert [reason(letter) for letter in letters(worker, agent, 1).values()] == [
        "timestamp_in_future"
    ]


def test_a_task_end_far_ahead_is_rejected_and_the_task_still_ends(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 5: no task_completed or ttl_expired revocation, ever."""
    send(producer, "grant", agent, worker.grant(agent, ttl=4.0).encode())
    send(producer, "task", agent, task_end(agent, ts=253402300799))
    send(producer, "task", agent, task_end(agent, ts=time.time() + YEAR))

    assert {reason(letter) for letter in letters(worker, agent, 2).values()} == {
        "timestamp_in_future"
    }
    assert [r.reason_code for r in worker.revocations(agent)] == ["ttl_expired"]


@pytest.mark.parametrize(("ttl", "shift"), [(-3600.0, -3630.0), (None, 5000.0)],
                         ids=["expired_back_dated", "not_yet_valid_forward_dated"])
def test_grant_validity_is_judged_at_the_workers_clock(
    worker: RunningWorker, agent: str, producer: KafkaProducer, ttl: float | None, shift: float
) -> None:
    """Row 6: the record timestamp, which the producer sets, decided validity. (Where a
    backlog left the partition's stream time behind, the grant's own issue time decided
    it: test_hostile_pipeline shows that case on purpose.)"""
    now = time.time()
    token = (worker.grant(agent, ttl=ttl) if ttl is not None
             else worker.grant(agent, issued_at=now + 3600, expires_at=now + 7200))
    send(producer, "grant", agent, token.encode(), timestamp=now + shift)

    [letter] = letters(worker, agent, 1).values()
    assert reason(letter) == ("expired" if ttl is not None else "not_yet_valid")


def test_an_older_wider_grant_after_the_newer_one_is_rejected(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 8: it replaced the newer grant and authorised what that one forbids."""
    now = time.time()
    wide = worker.grant(agent, grant_id="g-wide", issued_at=now - 60, tools=["*"])
    narrow = worker.grant(agent, grant_id="g-narrow", issued_at=now - 30)
    send(producer, "grant", agent, narrow.encode())
    send(producer, "grant", agent, wide.encode())
    send(producer, "toolcall", agent, call(agent, tool="iam.update_user_password"))

    assert [reason(letter) for letter in letters(worker, agent, 1).values()] == [
        "grant_superseded"
    ]
    assert [v["decision"] for v in verdicts(worker, agent, 1)] == ["revoke"]


def test_a_replayed_revocation_is_refused_as_stale_by_a_new_subscriber(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 11: a genuine revocation replayed to a new subscriber was accepted again."""
    send(producer, "grant", agent, worker.grant(agent).encode())
    send(producer, "toolcall", agent, call(agent, tool="iam.update_user_password"))
    [genuine] = worker.topics["revocations"].of(agent)
    time.sleep(2.5)

    rejected: list[RejectedRevocation] = []
    with RevocationSubscriber(worker.bootstrap, jwks=worker.jwks_url, agents=[agent],
                              max_age=2.0, on_rejected=rejected.append) as subscriber:
        producer.send(TOPICS["revocations"], key=genuine.key, value=genuine.value,
                      headers=genuine.headers).get(timeout=30)
        got = wait_for(lambda: subscriber.poll(0.2) or rejected, bool, 30, "the replay")
    assert got == rejected and [r.code for r in rejected] == ["stale"]


def shed(worker: RunningWorker) -> dict[tuple[str, str], float]:
    """The worker's ``intentwatch_state_shed_total`` samples: (kind, action) -> count."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.labels["kind"], s.labels["action"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "intentwatch_state_shed" for s in family.samples
            if s.name == "intentwatch_state_shed_total"}


def changelog(worker: RunningWorker, table: str) -> tuple[int, dict[str, bytes | None]]:
    """``table``'s changelog topic read to its end: the bytes of its largest record, and
    each key's last value (``None``: deleted)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{worker.status()['app_id']}-{table}-changelog"
    consumer = KafkaConsumer(bootstrap_servers=worker.bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends, largest, last = consumer.end_offsets(partitions), 0, {}
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    largest = max(largest, len(record.value or b""))
                    last[json.loads(record.key)] = record.value
        return largest, last
    finally:
        consumer.close()


@pytest.mark.slow
def test_an_agent_opening_thousands_of_tasks_keeps_every_table_value_small(
    worker: RunningWorker, agent: str, producer: KafkaProducer
) -> None:
    """Row 1: an agent's grants value passed the broker's 1 MB message limit and the worker
    exited, again on every restart; its open tasks (one value with each task's calls) had
    no limit at all. 3,000 tasks, a third with a signed grant, each with a 2 kB call: the
    agent keeps at most 256 open tasks, each new one past them ends the least active
    (its credentials revoked, counted on /metrics), and no changelog record of any table
    comes near 1 MB."""
    from intentwatch.models.limits import StateLimits

    limits, tasks = StateLimits(), 3000
    before = shed(worker)
    for n in range(tasks):
        if n % 3 == 0:
            producer.send(TOPICS["events"], key=agent.encode(),
                          value=worker.grant(agent, f"t{n}").encode(),
                          headers=[(KIND_HEADER, b"grant")])
        producer.send(TOPICS["events"], key=agent.encode(),
                      value=call(agent, task=f"t{n}", args={"body": "x" * 2000}),
                      headers=[(KIND_HEADER, b"toolcall")])
    producer.flush(timeout=120)
    send(producer, "toolcall", agent, call(agent, task=f"t{tasks - 3}", event_id="after"))

    got = worker.topics["verdicts"].of(agent, tasks + 1, timeout=480)
    [after] = [v for v in map(json.loads, (r.value for r in got)) if v["event_id"] == "after"]
    assert after["decision"] == "allow"
    evicted = tasks - limits.open_tasks_per_agent
    counted = wait_for(lambda: shed(worker), lambda now: now[("task", "evicted")]
                       - before[("task", "evicted")] >= evicted, 60, "the evictions counted")
    assert counted[("task", "evicted")] - before[("task", "evicted")] == evicted

    for table in ("grants", "open", "ended", "forgotten", "learned"):
        largest, last = changelog(worker, table)
        assert largest <= 256 * 1024, table
        if table == "open":  # the agent's open tasks as the table holds them
            still = {key.split("|", 1)[1] for key, value in last.items()
                     if key.startswith(agent + "|") and value is not None}
    assert len(still) == limits.open_tasks_per_agent and f"t{tasks - 3}" in still
    granted = {f"t{n}" for n in range(0, tasks, 3)} - still  # evicted with a grant

    def unrevoked() -> tuple[int, list[str]]:
        revoked = {r.task_id for r in worker.revocations(agent, 1) if r.reason_code == "policy"
                   and "to make room" in r.reason}
        return len(granted - revoked), sorted(granted - revoked)[:5]

    assert granted
    wait_for(unrevoked, lambda left: left[0] == 0, 120, "a revocation of each evicted task")
    assert worker.process.poll() is None
    log = worker.log_file.read_text(errors="replace")
    assert "Traceback" not in log and "crashed" not in log.lower()
