"""Rendering the demo: the live board of revocations and the summary at the end.

Revocations for cause (intent violations, anomalies, credential reuse, policy) are shown
apart from the normal ends of tasks (``task_completed``, ``ttl_expired``), with whole task
ids, so they can be looked up afterwards (``intentwatch audit``, ``intentwatch replay``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from intentwatch.contracts import Revocation, format_ts
from intentwatch.reference import GatewayCall

if TYPE_CHECKING:
    from intentwatch.demo.run import TaskResult

__all__ = ["LIFECYCLE", "Report", "for_cause", "render_live", "short_agent"]

LIFECYCLE = ("task_completed", "ttl_expired")
"""Revocation reasons that end a task normally rather than cut it for cause."""
Received = tuple[float, Revocation]
"""A revocation and the epoch seconds when it reached the credential broker."""

_REASON_STYLE = {"intent_violation": "red", "anomaly": "magenta", "credential_reuse": "yellow",
                 "policy": "yellow"}


def for_cause(rows: list[Received]) -> list[Received]:
    """The revocations that cut a task for cause, not the normal ends of tasks."""
    return [row for row in rows if row[1].reason_code not in LIFECYCLE]


def short_agent(agent_id: str) -> str:
    """An agent's SPIFFE ID without the trust domain's boilerplate.

    >>> short_agent("spiffe://acme.org/agents/support/agent-3")
    'support/agent-3'
    """
    return agent_id.removeprefix("spiffe://").split("/agents/", 1)[-1]


def render_live(rows: list[Received], calls: list[GatewayCall], deadline: float) -> Group:
    """The live view: call counts, each revocation for cause (time, agent, whole task id,
    reason, score, then why on its own line), then the count of normal task ends."""
    outcomes = Counter(call.outcome for call in calls)
    cut = for_cause(rows)
    ends = [row for row in rows if row[1].reason_code in LIFECYCLE]
    left = max(0.0, deadline - time.monotonic())
    lines = [Text.assemble(
        ("Live ", "bold"), f"{left:4.0f} s left   calls {len(calls)}: ",
        (f"{outcomes['ok']} ok", "green"), ", ", (f"{outcomes['error']} error", "yellow"),
        ", ", (f"{outcomes['denied']} denied by the gateway", "red")),
        Text(f"Revoked for cause: {len(cut)}", style="bold")]
    for received_at, revocation in cut:
        code = revocation.reason_code
        lines.append(Text.assemble(
            ("  " + format_ts(received_at)[11:23] + "  ", "dim"),
            (short_agent(revocation.agent_id), "cyan"), "  task ", revocation.task_id, "  ",
            (code, f"bold {_REASON_STYLE.get(code, '')}"), f"  score {revocation.score:.2f}"))
        lines.append(Text("    " + revocation.reason))
    reasons = Counter(revocation.reason_code for _, revocation in ends)
    lines.append(Text(f"Tasks ended normally: {len(ends)} ({_counts(reasons)})", style="dim"))
    return Group(*lines)


@dataclass
class Report:
    """What the live phase did, and how fast the loop closed."""

    results: list[TaskResult]
    revocations: list[Received]
    decisions: dict[str, str]
    worker_status: dict[str, Any]

    def print(self, console: Console) -> None:
        calls = [a.call for r in self.results for a in r.attempts]
        outcomes = Counter(call.outcome for call in calls)
        by_event = {call.event_id: call for call in calls}
        verdicts = Counter(self.decisions[call.event_id] for call in calls
                           if call.event_id in self.decisions)
        reasons = Counter(rev.reason_code for _, rev in self.revocations)

        console.rule("[bold]Summary")
        console.print(
            f"Tool calls through the gateway: {len(calls)} ({outcomes['ok']} ok, "
            f"{outcomes['error']} error, {outcomes['denied']} denied before running)")
        console.print(f"Verdicts by decision: {_counts(verdicts)} "
                      f"({sum(verdicts.values())} of {len(calls)} calls judged)")
        console.print(f"Revocations by reason: {_counts(reasons)}")

        cut = self._cut_times(by_event)
        to_revocation = [revoked - call.started for call, revoked, _ in cut.values()]
        to_denial = [denied - call.started for call, _, denied in cut.values() if denied]
        console.print()
        console.print("[bold]Measured[/bold] (wall clock, one sample per task revoked for cause)")
        console.print("  violating call -> revocation at the broker:    "
                      + _percentiles(to_revocation))
        console.print("  violating call -> first denial at the gateway: " + _percentiles(to_denial))
        console.print("  [dim](the second includes the agent's pause before its next call)[/dim]")
        console.print(self._attack_table(cut))
        late = [call for call in calls if call.task_id in cut and call.outcome != "denied"
                and call.started > cut[call.task_id][1]]
        console.print(f"Calls of revoked tasks that ran after the revocation reached the broker: "
                      f"{len(late)}")
        benign = [r for r in self.results if r.task.attack is None]
        false_cuts = [r for r in benign if r.task.task_id in cut]
        console.print(f"Benign tasks: {len(benign)}; revoked for cause (false positives): "
                      f"{len(false_cuts)}.")
        for result in false_cuts:
            console.print(f"  {short_agent(result.task.agent_id)} task {result.task.task_id}")
        published = self.worker_status.get("published", {})
        dead = {k: v for k, v in published.items() if k.startswith("dlq.")}
        if dead:
            console.print(f"[yellow]Dead letters at the worker (warm-up included): "
                          f"{_counts(Counter(dead))}[/yellow]")

    def _cut_times(
        self, by_event: dict[str | None, GatewayCall]
    ) -> dict[str, tuple[GatewayCall, float, float | None]]:
        """Task id -> (violating call, revocation received at, first denial answered at),
        for the tasks revoked for a call that ran (not one the gateway had denied)."""
        cut: dict[str, tuple[GatewayCall, float, float | None]] = {}
        for received_at, rev in self.revocations:
            trigger = next((by_event[e] for e in rev.evidence if e in by_event), None)
            if (rev.reason_code in LIFECYCLE or trigger is None or trigger.outcome == "denied"
                    or rev.task_id in cut):
                continue
            denials = [call.started + call.duration for call in by_event.values()
                       if call.task_id == rev.task_id and call.outcome == "denied"
                       and call.started > trigger.started]
            cut[rev.task_id] = (trigger, received_at, min(denials, default=None))
        return cut

    def _attack_table(self, cut: dict[str, tuple[GatewayCall, float, float | None]]) -> Table:
        table = Table(title="Hijacked tasks", expand=False)
        table.add_column("agent, task", no_wrap=True)
        for name in ("attack", "attack calls", "ran", "ran after the violating call", "denied",
                     "revoked (reason, after)"):
            table.add_column(name)
        for result in self.results:
            if result.task.attack is None:
                continue
            attacks = [a.call for a in result.attempts if a.attack]
            ran = [c for c in attacks if c.outcome != "denied"]
            entry = cut.get(result.task.task_id)
            after = [c for c in ran if entry and c.started > entry[0].started]
            revocations = [rev for _, rev in self.revocations
                           if rev.task_id == result.task.task_id]
            revocation = next((rev for rev in revocations if rev.reason_code not in LIFECYCLE),
                              revocations[0] if revocations else None)
            revoked = "no"
            if entry is not None and revocation is not None:
                latency = 1000 * (entry[1] - entry[0].started)
                revoked = f"{revocation.reason_code}, {latency:.0f} ms"
            elif revocation is not None:
                revoked = revocation.reason_code
            table.add_row(f"{short_agent(result.task.agent_id)}\n{result.task.task_id}",
                          result.task.attack,
                          str(len(attacks)), str(len(ran)), str(len(after)),
                          str(len(attacks) - len(ran)), revoked)
        return table


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "none"


def _percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "no sample"
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return f"p50 {p50:6.0f} ms   p99 {p99:6.0f} ms   (n={len(seconds)})"


