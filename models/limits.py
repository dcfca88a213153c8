"""How much state one agent may make the engine keep: the caps and what happens past them.

Inputs come from agents that may be compromised, so every per-agent store is bounded by
count and bytes (bytes as stored: msgpack), and each state table value stays far below
the broker's 1 MB message limit. Past a cap the engine sheds the oldest or least useful
state, failing closed: nothing it forgets lets a credential be used unjudged.

- **grants**: at most ``grants_per_agent`` grants in ``grant_bytes_per_agent`` (one table
  value per agent); grants of ended tasks make room first, else ``too_many_grants``.
- **open tasks**: at most ``open_tasks_per_agent``; a new task ends the agent's least
  recently active open task as ``expired``, revoking its credentials (``policy``): a
  task the engine no longer watches keeps no credential.
- **one open task** (one table value per task): calls kept for learning at most
  ``staged_calls_per_task`` and ``staged_bytes_per_task`` (later calls are judged, not
  learned); calls waiting for the grant at most ``parked_calls_per_task`` and
  ``parked_bytes_per_task`` (past that they are judged at once, as without a grant); the
  usage the audit reports (tools, targets, labels, out-of-grant calls) at most
  ``usage_bytes_per_task`` (later new entries are counted, not listed).
- **tombstones** of ended tasks: at most ``tombstones_per_agent`` in
  ``tombstone_bytes_per_agent`` (one table value per agent); the oldest are forgotten
  first, with their grants, so a later call of a forgotten task has no grant and is
  revoked (``no_grant``), and a grant issued no later than the latest of their grants is
  refused for a task the engine holds nothing of (``task_forgotten``).
- **resident agents**, per engine (a worker has one per partition): what the detector
  learned of at most ``resident_agents`` agents is held in memory; meeting one more
  evicts the least recently met (its learned state written to the ``learned`` table
  first if it changed), and the next call of an evicted agent reads it back from there.
  Eviction forgets nothing: the reloaded state is the state evicted, so verdicts are
  those of an engine that holds every agent (an open task's scoring state is the
  engine's, not the detector's, and stays).

Every refusal and eviction is counted (:data:`SHED`): the engine's ``shed`` counter,
``intentwatch_state_shed_total{kind, action}`` on the worker's ``/metrics``.

>>> limits = StateLimits.from_dict({"open_tasks_per_agent": 64})
>>> limits.open_tasks_per_agent, limits.grants_per_agent
(64, 256)
>>> StateLimits.from_dict({"open_tasks": 64})
Traceback (most recent call last):
...
ValueError: unknown limits settings: open_tasks
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from intentwatch.models.config import settings_from

__all__ = ["SHED", "ShedKind", "StateLimits", "remember"]

ShedKind = Literal[
    "grant", "task", "staged_call", "parked_call", "usage", "tombstone", "agent"
]
SHED: tuple[tuple[ShedKind, str], ...] = (
    ("grant", "evicted"),  # a grant of an ended task, for a new grant
    ("grant", "refused"),  # too_many_grants: a dead letter
    ("task", "evicted"),  # an open task ended for a new one
    ("staged_call", "refused"),  # a call judged but not kept to learn
    ("parked_call", "evicted"),  # a call judged before its grace period was over
    ("usage", "refused"),  # a tool, target, label or out-of-grant call the audit won't list
    ("tombstone", "evicted"),  # an ended task forgotten early, with its grant
    ("agent", "evicted"),  # an agent's learned state out of memory (it is in ``learned``)
)
"""What the engine refuses or evicts past a limit: (kind, action), its ``shed`` counter's keys."""


@dataclass(frozen=True)
class StateLimits:
    """The caps on per-agent state (``limits`` in the scoring config)."""

    grants_per_agent: int = 256
    grant_bytes_per_agent: int = 512 * 1024
    open_tasks_per_agent: int = 256
    staged_calls_per_task: int = 512
    staged_bytes_per_task: int = 192 * 1024
    parked_calls_per_task: int = 256
    parked_bytes_per_task: int = 128 * 1024
    usage_bytes_per_task: int = 64 * 1024
    tombstones_per_agent: int = 2048
    tombstone_bytes_per_agent: int = 384 * 1024
    resident_agents: int = 2048
    """Agents whose learned state one engine holds in memory (the others' is in the
    ``learned`` table, read again when they are next met)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateLimits:
        limits = settings_from(cls, data, "limits")
        small = [f.name for f in fields(cls) if getattr(limits, f.name) < 1]
        if small:
            raise ValueError(f"limits must be at least 1: {', '.join(small)}")
        return limits


def remember(seen: dict[str, None], key: str, cap: int) -> None:
    """Add ``key`` to a task's ``seen`` keys while they are fewer than ``cap`` (a task's
    scratch state stays bounded, whatever it calls).

    >>> seen: dict[str, None] = {}
    >>> for key in ("a", "b", "c", "a"):
    ...     remember(seen, key, 2)
    >>> list(seen)
    ['a', 'b']
    """
    if len(seen) < cap:
        seen[key] = None
