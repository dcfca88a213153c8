"""Why: a call's or a task's verdicts, revocations and audit, read back from the topics.

:func:`explain` gathers what the workers published about one call (by its event id) or
one task; :func:`follow` yields verdicts and revocations as they are published. Both
read the topics like any consumer (nothing of the worker is needed), and check every
revocation token against intentwatch's JWKS.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console, Group
from rich.table import Table

from intentwatch.contracts import TOPICS, AuditRecord, Revocation, Verdict, format_ts
from intentwatch.sdk.subscriber import fetch_jwks
from intentwatch.tokens.keys import Keyring
from intentwatch.tokens.revocations import RevocationRejected, RevocationVerifier
from intentwatch.topic_reader import follow_topics, read_topics

__all__ = ["Explanation", "explain", "follow", "line_of", "revocation_verifier"]

_verdicts = msgspec.json.Decoder(Verdict)
_audits = msgspec.json.Decoder(AuditRecord)


@dataclass
class Explanation:
    """What the topics hold about one call or task."""

    event_id: str | None
    task_id: str | None
    agent_id: str | None
    verdicts: list[Verdict] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    unverified: int = 0
    """Revocation records of this agent whose token did not verify (not shown)."""

    @property
    def found(self) -> bool:
        return bool(self.verdicts or self.revocations or self.audits)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for ``--json``."""
        return json.loads(msgspec.json.encode({
            "event_id": self.event_id, "task_id": self.task_id, "agent_id": self.agent_id,
            "verdicts": self.verdicts, "revocations": self.revocations, "audits": self.audits,
            "unverified_revocations": self.unverified,
        }))


def revocation_verifier(jwks: str | None, keys_dir: Path, *, timeout: float) -> RevocationVerifier:
    """A verifier for intentwatch's revocation tokens: ``jwks`` (a URL or a JWKS file), else
    the local keyring in ``keys_dir``, else the local worker's ``/.well-known/jwks.json``."""
    if jwks is None and (keys_dir / "keyring.json").exists():
        return RevocationVerifier(Keyring.load(keys_dir).jwks())
    source = jwks or "http://127.0.0.1:6066/.well-known/jwks.json"
    if source.startswith(("http://", "https://")):
        return RevocationVerifier(fetch_jwks(source, timeout))
    return RevocationVerifier(Path(source))


def explain(
    bootstrap: str,
    verifier: RevocationVerifier,
    *,
    event_id: str | None = None,
    task_id: str | None = None,
    agent_id: str | None = None,
    timeout: float = 10.0,
) -> Explanation:
    """The verdicts of the call ``event_id`` (or of every call of the task ``task_id``,
    optionally of ``agent_id`` only), with its task's revocations and audit."""
    found = Explanation(event_id, task_id, agent_id)
    verdicts = [_verdicts.decode(r.value)
                for r in read_topics(bootstrap, [TOPICS["verdicts"]], timeout=timeout)]
    if event_id is not None:
        mine = [v for v in verdicts if v.event_id == event_id]
        if not mine:
            return found
        found.task_id, found.agent_id = mine[0].task_id, mine[0].agent_id
        found.verdicts = mine

    def ours(agent: str, task: str) -> bool:
        return task == found.task_id and found.agent_id in (None, agent)

    if event_id is None:
        found.verdicts = [v for v in verdicts if ours(v.agent_id, v.task_id)]
    for record in read_topics(bootstrap, [TOPICS["revocations"], TOPICS["audit"]],
                              timeout=timeout):
        if record.topic == TOPICS["audit"]:
            audit = _audits.decode(record.value)
            if ours(audit.agent_id, audit.task_id):
                found.audits.append(audit)
            continue
        try:
            revocation = verifier.verify(record.value)
        except RevocationRejected:
            key = record.key.decode("utf-8", "replace") if record.key else None
            found.unverified += key is not None and key == found.agent_id
            continue
        if ours(revocation.agent_id, revocation.task_id):
            found.revocations.append(revocation)
    if found.agent_id is None:
        agents = {v.agent_id for v in found.verdicts} | {r.agent_id for r in found.revocations}
        found.agent_id = next(iter(agents)) if len(agents) == 1 else None
    return found


def render(found: Explanation, console: Console) -> None:
    """Print an explanation as tables."""
    what = f"call {found.event_id}" if found.event_id else f"task {found.task_id}"
    console.print(f"[bold]{what}[/bold] of task {found.task_id} of agent "
                  f"{found.agent_id or 'several agents'}", highlight=False)
    verdicts = Table(title="verdicts", show_lines=True)
    for column in ("time", "event id", "tool", "decision", "score", "reasons", "components"):
        verdicts.add_column(column, overflow="fold")
    for verdict in found.verdicts:
        reasons = "\n".join(f"{r.code} ({r.weight:.2f}): {r.detail}" for r in verdict.reasons)
        scores = {k: v for k, v in verdict.components.items() if not k.startswith("history_")}
        top = sorted(scores.items(), key=lambda kv: -abs(kv[1]))
        learned = ", ".join(f"{name.removeprefix('history_')} {value:,.0f}"
                            for name, value in verdict.components.items() if name not in scores)
        components = "\n".join(f"{name} {value:.2f}" for name, value in top) or "-"
        verdicts.add_row(
            verdict.ts, verdict.event_id, verdict.tool, verdict.decision, f"{verdict.score:.2f}",
            reasons or "-", components + (f"\nlearned history: {learned}" if learned else ""),
        )
    revocations = Table(title="revocations")
    for column in ("time", "reason", "why", "credentials", "evidence", "revocation id"):
        revocations.add_column(column, overflow="fold")
    for revocation in found.revocations:
        revocations.add_row(
            format_ts(revocation.event_ts), revocation.reason_code, revocation.reason,
            ", ".join(revocation.credential_ids) or "-", ", ".join(revocation.evidence) or "-",
            revocation.revocation_id,
        )
    parts: list[Any] = [verdicts, revocations]
    for audit in found.audits:
        audit_table = Table(title=f"audit ({audit.ended} {audit.ended_at})", show_header=False)
        audit_table.add_column("what")
        audit_table.add_column("value", overflow="fold")
        audit_table.add_row("intent", audit.intent or "-")
        for kind in ("tools", "targets", "data_labels"):
            used = ", ".join(f"{name} ×{count}" for name, count in audit.used[kind].items())
            audit_table.add_row(f"{kind} granted", ", ".join(audit.granted[kind]) or "-")
            audit_table.add_row(f"{kind} used", used or "-")
            audit_table.add_row(f"{kind} never used", ", ".join(audit.unused[kind]) or "-")
        audit_table.add_row("out-of-grant calls", str(len(audit.out_of_grant)))
        audit_table.add_row("calls, max score", f"{audit.calls}, {audit.max_score:.2f}")
        audit_table.add_row("revoked for cause", ", ".join(audit.revocation_reasons)
                            if audit.revoked else "no")
        parts.append(audit_table)
    console.print(Group(*parts))
    if found.unverified:
        console.print(f"{found.unverified} revocation record(s) of this agent did not verify "
                      "against the JWKS and are not shown (see --jwks).")


def follow(
    bootstrap: str,
    verifier: RevocationVerifier,
    *,
    decisions: Collection[str] = (),
    reasons: Collection[str] = (),
    agent_id: str | None = None,
    from_beginning: bool = False,
    timeout: float = 10.0,
) -> Iterator[Verdict | Revocation]:
    """Verdicts and (verified) revocations as they are published, filtered: a verdict
    passes if its decision is one of ``decisions`` and one of its reason codes is one of
    ``reasons``; a revocation if its reason code is one of ``reasons`` (an empty filter
    passes everything; ``decisions`` other than ``revoke`` leave revocations out)."""
    topics = [TOPICS["verdicts"], TOPICS["revocations"]]
    for record in follow_topics(bootstrap, topics, from_beginning=from_beginning,
                                timeout=timeout):
        if record.topic == TOPICS["verdicts"]:
            item: Verdict | Revocation = _verdicts.decode(record.value)
            assert isinstance(item, Verdict)
            passes = ((not decisions or item.decision in decisions)
                      and (not reasons or any(r.code in reasons for r in item.reasons)))
        else:
            try:
                item = verifier.verify(record.value)
            except RevocationRejected:
                continue
            passes = ((not decisions or "revoke" in decisions)
                      and (not reasons or item.reason_code in reasons))
        if passes and agent_id in (None, item.agent_id):
            yield item


def line_of(item: Verdict | Revocation) -> str:
    """One line for a verdict or a revocation."""
    if isinstance(item, Verdict):
        why = "; ".join(f"{r.code}: {r.detail}" for r in item.reasons[:2]) or "-"
        return (f"{item.ts} verdict {item.decision:<6} {item.score:.2f} {item.agent_id} "
                f"task {item.task_id} call {item.event_id} {item.tool}: {why}")
    return (f"{format_ts(item.event_ts)} REVOKED {item.reason_code} {item.agent_id} "
            f"task {item.task_id} credentials {', '.join(item.credential_ids) or '-'}: "
            f"{item.reason} (revocation {item.revocation_id})")
