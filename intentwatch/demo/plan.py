"""Planning the demo: a simulated fleet cut into benign history and live task scripts.

:func:`plan_fleet` simulates a fleet (:mod:`intentwatch.simulation.fleet`) up to now and
two days on: the tasks that end before now are the warm-up history, those that start
after it become :class:`LiveTask` scripts, one per agent, some of them hijacked. The seed
decides the fleet and which hijacks run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from intentwatch.contracts import format_ts
from intentwatch.models.config import load_config
from intentwatch.models.detection import ProvenanceConfig
from intentwatch.simulation.fleet import FleetSpec, generate

__all__ = ["HISTORY_TASKS", "LIVE_ATTACKS", "MAX_GAP", "LiveTask", "Step", "epoch", "plan_fleet"]

LIVE_ATTACKS = (
    "out_of_grant", "exfil_new_domain", "export_new_recipient", "privilege_change",
    "destructive_delete", "lateral_chain", "volume_creep", "use_after_task_end",
)
"""Hijacks the live phase stages, first one always (it breaks the grant by construction)."""
HISTORY_TASKS = 250
"""About how many benign history tasks the warm-up feeds at least (20-40 s, with the
worker's pace); more when a role needs more to learn its destinations."""
MAX_GAP = 3.0
"""Longest pause, in seconds, between two live calls of an agent (think time is capped)."""


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
    # enough history that every role has taught the clean tasks after which destinations
    # nothing vouches for count (and a margin: not every simulated task ends clean)
    provenance = ProvenanceConfig.from_dict(load_config().detectors.get("provenance", {}))
    per_agent = max(HISTORY_TASKS / (roles * agents_per_role),
                    1.25 * provenance.min_history_tasks / agents_per_role)
    days = float(np.clip(per_agent / FleetSpec().tasks_per_agent_per_day, 2.0, 10.0))
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
    previous = epoch(started["ts"])
    steps = []
    for call in sorted((e for e in events if e["kind"] == "toolcall"), key=_time):
        ts = epoch(call["ts"])
        steps.append(Step(
            gap=ts - previous, tool=call["tool"], target=call.get("target"),
            labels=call.get("data_labels", []), bytes_out=call.get("bytes_out") or 0,
            bytes_in=call.get("bytes_in") or 0, fails=call.get("outcome") == "error",
            attack=call["truth"]["attack"], after_end=call["ts"] > ended["ts"]))
        previous = ts
    attack = started["truth"]["attack_type"]
    return LiveTask(grant["agent_id"], f"{grant['task_id']}-{uuid.uuid4().hex[:6]}", grant,
                    ended["status"], steps, attack)


def epoch(text: str) -> float:
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


