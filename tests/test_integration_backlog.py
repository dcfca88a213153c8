"""A backlog loses nothing (real broker, real worker).

Days of fleet history are on the input topic before the worker starts; each agent's
grants, calls and task ends are one log, read in order. Every call gets exactly one
verdict and every task that ended its audit.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaProducer

from intentwatch.contracts import KIND_HEADER, TOPICS
from intentwatch.simulation.fleet import FleetSpec, generate
from intentwatch.tokens.grants import sign_grant
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka

def test_a_backlog_read_out_of_order_loses_nothing(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    records = generate(FleetSpec(seed=4, agents_per_role=1, history_days=1.5, attack_days=0.5))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    until = time.time() + 86400.0  # history: grants stay valid when read now
    agents, calls, ended = set(), Counter(), set()
    for record in records:
        kind = record.pop("kind")
        record.pop("truth", None)
        # agents unique to this run, so other tests' records on the topics do not mix in
        record["agent_id"] = agent = f"{record['agent_id']}-{tag}"
        agents.add(agent)
        if kind == "grant":
            value = sign_grant({**record, "expires_at": until}, issuer_key).encode()
        else:
            value = msgspec.json.encode(record)
        if kind == "toolcall":
            calls[agent] += 1
        if kind == "task" and record["status"] != "started":
            ended.add((agent, record["task_id"]))
        producer.send(TOPICS["events"], key=agent.encode(), value=value,
                      headers=[(KIND_HEADER, kind.encode())])
    producer.flush()
    producer.close()

    worker = RunningWorker(kafka_bootstrap, tmp_path, issuer_key)
    try:
        for agent, count in calls.items():
            verdicts = [json.loads(record.value)
                        for record in worker.topics["verdicts"].of(agent, count, timeout=180)]
            assert len({v["event_id"] for v in verdicts}) == len(verdicts) == count

        def audited() -> set[tuple[str, str]]:
            return {(a["agent_id"], a["task_id"]) for agent in agents
                    for a in (json.loads(r.value) for r in worker.topics["audit"].now(agent))}

        wait_for(audited, lambda got: ended <= got, 60, "an audit for every task that ended")
    finally:
        worker.close()
        worker.stop()
