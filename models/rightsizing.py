"""Right-sizing advice from audit records: what grants give that tasks never use.

Each audit record puts one task's grant beside what it used. Across many
tasks of an agent (or of a role), a privilege that is granted again and again
but never used is one to remove from the grant template. A request that
delegates to data ("do the tasks in my to-do list") gives its choices to
whatever the data says, so the detector only alerts on it: such tasks should
get a narrow grant, and the advice proposes one from what they used.

>>> from intentwatch.contracts import AuditRecord
>>> record = AuditRecord(agent_id="spiffe://acme.org/agents/hr/a1", task_id="t1", grant_id="g1",
...     intent="", granted={"tools": ["hr.*", "gmail.*"], "targets": ["*"], "data_labels": []},
...     used={"tools": {"hr.get_employee": 2}, "targets": {}, "data_labels": {}},
...     unused={"tools": ["gmail.*"], "targets": ["*"], "data_labels": []}, out_of_grant=[],
...     calls=2, max_score=0.1, revoked=False, revocation_reasons=[], ended="completed",
...     started_at=None, ended_at="2026-11-02T09:00:00.000Z")
>>> [advice.never_used["tools"] for advice in advise([record], by="role")]
[{'gmail.*': 1}]
>>> import msgspec
>>> todo = msgspec.structs.replace(record, intent="Work through the to-do list in the file")
>>> advise([todo], by="role")[0].delegating_grant()
{'tools': ['hr.get_employee'], 'targets': []}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from intentwatch.contracts import AuditRecord, role_of
from intentwatch.models.intent import parse_intent
from intentwatch.models.provenance import explicit_patterns

__all__ = ["GroupAdvice", "advise"]

_KINDS = ("tools", "targets", "data_labels")


@dataclass
class GroupAdvice:
    """Across the tasks of one agent or role: privileges granted but never used."""

    group: str
    tasks: int = 0
    revoked_tasks: int = 0
    out_of_grant_calls: int = 0
    granted: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in _KINDS}
    )
    unused: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in _KINDS}
    )
    delegating_tasks: int = 0
    """Tasks whose request delegates to data under a broad grant (a ``*`` tool, or a target
    pattern that names nothing)."""
    delegating_used: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in ("tools", "targets")}
    )

    def delegating_grant(self) -> dict[str, list[str]] | None:
        """The narrow grant to give the group's delegating requests: the tools and targets
        those tasks used (``None`` when no such task was granted broadly)."""
        if not self.delegating_tasks:
            return None
        return {kind: sorted(used) for kind, used in self.delegating_used.items()}

    @property
    def never_used(self) -> dict[str, dict[str, int]]:
        """Per kind: pattern -> in how many tasks it was granted, never once used."""
        return {
            kind: {
                pattern: granted
                for pattern, granted in self.granted[kind].most_common()
                if self.unused[kind][pattern] == granted
            }
            for kind in _KINDS
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "tasks": self.tasks,
            "revoked_tasks": self.revoked_tasks,
            "out_of_grant_calls": self.out_of_grant_calls,
            "never_used": self.never_used,
            "delegating_tasks": self.delegating_tasks,
            "delegating_grant": self.delegating_grant(),
        }


def advise(
    records: Iterable[AuditRecord], by: Literal["agent", "role"] = "agent"
) -> list[GroupAdvice]:
    """Group audit records by agent or role and collect never-used privileges."""
    groups: dict[str, GroupAdvice] = {}
    for record in records:
        key = record.agent_id if by == "agent" else role_of(record.agent_id)
        advice = groups.get(key) or groups.setdefault(key, GroupAdvice(key))
        advice.tasks += 1
        advice.revoked_tasks += record.revoked
        advice.out_of_grant_calls += len(record.out_of_grant)
        for kind in _KINDS:
            advice.granted[kind].update(set(record.granted.get(kind, [])))
            advice.unused[kind].update(set(record.unused.get(kind, [])))
        if _broad(record) and parse_intent(record.intent).delegates is not None:
            advice.delegating_tasks += 1
            for kind, used in advice.delegating_used.items():
                used.update(record.used.get(kind, {}))
    return sorted(groups.values(), key=lambda advice: advice.group)


def _broad(record: AuditRecord) -> bool:
    tools, targets = record.granted.get("tools", []), record.granted.get("targets", [])
    return "*" in tools or len(explicit_patterns(targets)) < len(targets)
