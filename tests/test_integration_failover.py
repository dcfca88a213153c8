"""Failover in seconds (real broker, two real worker processes, SIGKILL).

Two workers share a consumer group; one is killed with SIGKILL. Calls of an agent
whose partition the killed worker held are judged again by the survivor once the
group's session timeout has passed (``INTENTWATCH_SESSION_TIMEOUT_SECONDS``, 6 s by
default, the broker's floor). The test prints the measured gap between the kill and
the first verdict of a call published after it; it asserts what is guaranteed: every
call gets its verdict and the partition is the survivor's.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from intentwatch.pipeline.app import agent_partition
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka


def test_a_killed_workers_partitions_are_judged_by_the_survivor(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    app_id = f"iw-failover-{uuid.uuid4().hex[:8]}"
    for home in ("a", "b"):
        (tmp_path / home).mkdir()
    first = RunningWorker(kafka_bootstrap, tmp_path / "a", issuer_key, app_id=app_id)
    second = RunningWorker(kafka_bootstrap, tmp_path / "b", issuer_key, app_id=app_id)
    try:
        def split() -> tuple[list[int], list[int]]:
            return first.status()["partitions"], second.status()["partitions"]

        owned = wait_for(split, lambda got: bool(got[0]) and bool(got[1])
                         and not set(got[0]) & set(got[1]), 120, "the partitions to be split")
        partitions = len(owned[0]) + len(owned[1])
        agent = next(a for a in (f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:10]}"
                                 for _ in range(1000))
                     if agent_partition(a, partitions) in owned[0])
        sdk = second.publisher
        sdk.publish_grant(second.grant(agent, ttl=3600.0))
        credential = f"c-{agent.rsplit('/', 1)[1]}-t1"

        def publish(n: int) -> str:
            return sdk.publish_toolcall({
                "event_id": f"call-{n}", "agent_id": agent, "task_id": "t1",
                "tool": "crm.lookup_customer", "credential_id": credential,
                "target": "crm://c-42", "data_labels": ["internal"],
            }).event_id

        publish(0)
        sdk.flush()
        second.topics["verdicts"].of(agent, 1)  # the first worker judges the agent

        first.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.process.wait(timeout=30)
        published: dict[str, float] = {}
        n = 1
        while True:  # a call every 100 ms until one is judged after the kill
            published[publish(n)] = time.monotonic()
            sdk.flush()
            n += 1
            judged = [json.loads(r.value)["event_id"] for r in second.topics["verdicts"].now(agent)]
            if any(event_id in published for event_id in judged):
                break
            assert time.monotonic() - killed < 120, "the survivor never took the partition"
            time.sleep(0.1)
        print(f"failover: first verdict after the kill {time.monotonic() - killed:.1f} s "
              f"after it (session timeout 6 s)")
        wait_for(lambda: {json.loads(r.value)["event_id"]
                          for r in second.topics["verdicts"].now(agent)},
                 lambda judged: judged >= set(published), 60, "a verdict for every call")
        assert agent_partition(agent, partitions) in second.status()["partitions"]
    finally:
        for worker in (first, second):
            worker.close()
        second.stop()
