"""Grant conformance: facts about a call and its grant, no learning.

A violation decides on its own: the call is outside what a human approved.

>>> from intentwatch.contracts import Grant
>>> grant = Grant(grant_id="g1", agent_id="spiffe://acme.org/agents/a1", task_id="t1",
...               credential_ids=["c1"], tools=["gmail.*"], targets=["mailto:*@acme.org"],
...               data_labels=["internal"], issued_at=0.0, expires_at=600.0, issuer="broker")
>>> target_allowed(grant.targets, "mailto:bob@acme.org")
True
>>> target_allowed(grant.targets, "mailto:x@evil.example")
False
>>> labels_outside(grant.data_labels, ["public", "pii"])
['pii']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import urlsplit

from intentwatch.contracts import LABEL_LEVELS, Grant, Reason, ToolCall, shorten

__all__ = [
    "Violation",
    "check_call",
    "labels_outside",
    "target_allowed",
    "target_host",
    "tool_allowed",
]

Violation = Reason
"""A conformance failure: ``code`` names the fact, ``detail`` explains it, weight is 1."""

_LEVEL_RANK = {level: rank for rank, level in enumerate(LABEL_LEVELS)}


@lru_cache(maxsize=65536)
def target_host(target: str) -> str | None:
    """The host a target points at (URL host, bare host, or mail domain), if it has one."""
    if "://" in target:
        return urlsplit(target).hostname
    if target.startswith("mailto:"):
        return target.rpartition("@")[2].lower() or None
    if ":" in target or "/" in target:
        return None
    return target.lower()


def tool_allowed(patterns: Sequence[str], tool: str) -> bool:
    """Whether any glob pattern of the grant covers ``tool``."""
    return _tool_covered(tuple(patterns), tool)


@lru_cache(maxsize=65536)
def _tool_covered(patterns: tuple[str, ...], tool: str) -> bool:
    return any(fnmatchcase(tool, pattern) for pattern in patterns)


def target_allowed(patterns: Sequence[str], target: str) -> bool:
    """Whether a grant's target patterns cover ``target``.

    A pattern with a scheme (``mailto:*@acme.org``, ``iban:DE89*``,
    ``https://api.acme.org/*``) matches the whole target; a bare host pattern
    (``*.acme.org``) matches the host of a URL or a bare host target.
    """
    host = None
    for pattern in patterns:
        if pattern == "*" or fnmatchcase(target, pattern):
            return True
        if ":" not in pattern and "/" not in pattern:
            host = host if host is not None else (target_host(target) or "")
            if host and fnmatchcase(host, pattern.lower()):
                return True
    return False


def labels_outside(allowed: Iterable[str], labels: Iterable[str]) -> list[str]:
    """The data labels a grant does not allow.

    An allowed classification level covers every lower level (``confidential``
    covers ``internal`` and ``public``); tags such as ``pii`` must be named.
    """
    allowed = set(allowed)
    if "*" in allowed:
        return []
    ceiling = max((_LEVEL_RANK[a] for a in allowed if a in _LEVEL_RANK), default=-1)
    outside = []
    for label in labels:
        rank = _LEVEL_RANK.get(label)
        if (rank > ceiling) if rank is not None else (label not in allowed):
            outside.append(label)
    return outside


def _violation(code: str, detail: str) -> Violation:
    return Violation(code=code, weight=1.0, detail=shorten(detail))


def check_call(call: ToolCall, grant: Grant, *, skew: float = 30.0) -> list[Violation]:
    """Every way ``call`` leaves ``grant`` (empty when it conforms).

    ``skew`` is how far the agent's clock may run behind the grant issuer's before
    the call counts as made before its grant was issued (expiry gets no leeway).

    Details are cut to :attr:`~intentwatch.contracts.Limits.DETAIL_CHARS` with a count of
    what was left out, however many labels or patterns they would name.
    """
    violations: list[Violation] = []
    if call.ts > grant.expires_at:
        violations.append(_violation(
            "grant_expired",
            f"call made {call.ts - grant.expires_at:,.0f} s after grant {grant.grant_id} expired",
        ))
    elif call.ts < grant.issued_at - skew:
        violations.append(_violation(
            "grant_not_yet_valid",
            f"call made before grant {grant.grant_id} was issued",
        ))
    if call.credential_id is not None and call.credential_id not in grant.credential_ids:
        violations.append(_violation(
            "credential_not_issued",
            f"credential {call.credential_id} was not issued for task {grant.task_id} "
            "of this agent",
        ))
    if not tool_allowed(grant.tools, call.tool):
        violations.append(_violation(
            "tool_not_granted",
            f"tool {call.tool} is outside the grant's tools {grant.tools}",
        ))
    if call.target is not None and not target_allowed(grant.targets, call.target):
        violations.append(_violation(
            "target_not_granted",
            f"target {call.target} is outside the grant's targets {grant.targets}",
        ))
    outside = labels_outside(grant.data_labels, call.data_labels)
    if outside:
        violations.append(_violation(
            "label_not_granted",
            f"data labelled {', '.join(outside)} is outside the grant's labels "
            f"{grant.data_labels}",
        ))
    return violations
