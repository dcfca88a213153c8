"""Failover in seconds (real broker, two real worker processes, SIGKILL).

Two workers share a consumer group; one learns an agent's habits and is killed with
SIGKILL. Calls of that agent are judged again by the survivor once the group's session
timeout has passed (``INTENTWATCH_SESSION_TIMEOUT_SECONDS``, 6 s by default, the
broker's floor), from its standby copy of the dead worker's tables
(``INTENTWATCH_STANDBY_REPLICAS``, 1 by default), with what the first worker had
learned of the agent and its partition: a benign call scores exactly as the same call
did before the kill. The test prints the measured gaps between the kill and the
partition's assignment to the survivor and the first verdict of a call published after
it (how fast is ``bench.failover``'s to measure, over several runs; a test on a shared
machine asserts no wall-clock bound); it asserts what is guaranteed: every call gets its
verdict, the partition is the survivor's, and the learned state moved intact.
"""

from __future__ import annotations

import json
import math
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.failover import log_times
from intentwatch.pipeline.app import agent_partition
from tests.conftest import RunningWorker, wait_for

pytestmark = pytest.mark.kafka


def test_a_killed_workers_partitions_are_judged_by_the_survivor_with_what_was_learned(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path
) -> None:
    app_id = f"iw-failover-{uuid.uuid4().hex[:8]}"
    for home in ("a", "b"):
        (tmp_path / home).mkdir()
    quick = {"INTENTWATCH_POPULATION_SECONDS": "0.1"}
    first = RunningWorker(kafka_bootstrap, tmp_path / "a", issuer_key, app_id=app_id,
                          settings=quick)
    second = RunningWorker(kafka_bootstrap, tmp_path / "b", issuer_key, app_id=app_id,
                           settings=quick)
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

        def publish(task: str, n: int, target: str = "crm://c-42") -> str:
            credential = f"c-{agent.rsplit('/', 1)[1]}-{task}"
            return sdk.publish_toolcall({
                "event_id": f"{task}-call-{n}", "agent_id": agent, "task_id": task,
                "tool": "crm.lookup_customer", "credential_id": credential,
                "target": target, "data_labels": ["internal"],
            }).event_id

        def verdict(event_id: str) -> dict[str, Any]:
            found = wait_for(lambda: [v for r in second.topics["verdicts"].now(agent)
                                      if (v := json.loads(r.value))["event_id"] == event_id],
                             bool, 60, f"the verdict of {event_id}")
            return found[0]

        for k in range(3):  # the agent's habits, learned by the first worker
            task = f"learn{k}"
            sdk.publish_grant(second.grant(agent, task, ttl=3600.0))
            for n in range(4):
                publish(task, n, f"crm://c-4{n}")
            sdk.publish_task_event({"agent_id": agent, "task_id": task, "status": "completed"})
        sdk.flush()
        second.topics["audit"].of(agent, 3, timeout=120)  # each task learned as it ended
        learned = first.status()["learned"]["learned_calls"]
        wait_for(lambda: first.status()["learned"]["kept_calls"], lambda n: n >= learned, 60,
                 "the population state to be written")
        sdk.publish_grant(second.grant(agent, "before", ttl=3600.0))
        before = verdict(publish("before", 0, "crm://c-41"))  # the first worker judges it

        sdk.publish_grant(second.grant(agent, "t1", ttl=3600.0))
        killed_at = time.time()
        first.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.process.wait(timeout=30)
        published: dict[str, float] = {}
        n = 0
        while True:  # a call every 100 ms until one is judged after the kill
            published[publish("t1", n)] = time.monotonic()
            sdk.flush()
            n += 1
            judged = [json.loads(r.value)["event_id"] for r in second.topics["verdicts"].now(agent)]
            if any(event_id in published for event_id in judged):
                break
            assert time.monotonic() - killed < 120, "the survivor never took the partition"
            time.sleep(0.1)
        first_verdict = time.monotonic() - killed
        moved = log_times(second.log_file, killed_at, agent_partition(agent, partitions))
        print(f"failover: the partition was the survivor's "
              f"{moved.get('assigned', math.nan) - killed_at:.1f} s after the kill, the first "
              f"verdict {first_verdict:.1f} s after it")
        wait_for(lambda: {json.loads(r.value)["event_id"]
                          for r in second.topics["verdicts"].now(agent)},
                 lambda judged: judged >= set(published), 60, "a verdict for every call")
        assert agent_partition(agent, partitions) in second.status()["partitions"]

        sdk.publish_grant(second.grant(agent, "after", ttl=3600.0))
        after = verdict(publish("after", 0, "crm://c-41"))  # the survivor judges it
        assert second.status()["learned"]["restored_agents"] >= 1
        assert (after["score"], after["components"]) == (before["score"], before["components"])
    finally:
        for worker in (first, second):
            worker.close()
            worker.stop()
