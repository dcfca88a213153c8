"""The transmitter's own Security Event Tokens: stream verification and CAEP risk changes.

Revocations reach receivers as the CAEP ``session-revoked`` SETs of
:mod:`intentwatch.tokens.revocations`, re-addressed to each stream. Two more
kinds are made here, in the same SET profile (``typ: secevent+jwt``, no ``sub``,
no ``exp``, one event, a top-level ``sub_id``):

- the SSF ``verification`` event a receiver asks for, whose subject is the
  stream itself (an ``opaque`` id equal to the ``stream_id``) and which echoes
  the receiver's ``state``;
- optionally, a CAEP ``risk-level-change`` for each ``alert`` verdict: the task's
  session is now at ``MEDIUM`` risk, with the verdict's strongest reason. Its
  subject is ``complex`` like a revocation's, with the task id as an ``opaque``
  session (a verdict does not carry the grant's token, which a revocation's
  session names when there is one); both carry the task id in the private
  ``intentwatch`` claim, which is what a receiver correlates them by.

>>> claims = verification_claims("s1", "xyz", issuer="https://ssf.acme.org",
...     audience="https://broker.acme.org", jti="j1", issued_at=1793606400.5)
>>> claims["sub_id"], claims["events"][VERIFICATION]
({'format': 'opaque', 'id': 's1'}, {'state': 'xyz'})
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from intentwatch.contracts import Verdict
from intentwatch.tokens.keys import SigningKey
from intentwatch.tokens.revocations import SET_TYPE

__all__ = [
    "RISK_LEVEL_CHANGE",
    "VERIFICATION",
    "risk_level_change_claims",
    "sign_set",
    "verification_claims",
]

VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
"""The SSF 1.0 stream verification event type."""
RISK_LEVEL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
"""The CAEP 1.0 risk level change event type."""

_RISK_NAMESPACE = uuid.UUID("1b7c3a52-6f0e-4d43-9d3b-5f2a3c8e7d41")


def verification_claims(
    stream_id: str,
    state: str | None,
    *,
    issuer: str,
    audience: str | list[str],
    jti: str,
    issued_at: float,
) -> dict[str, Any]:
    """The claims of a verification SET for ``stream_id``, echoing ``state`` if given."""
    event = {} if state is None else {"state": state}
    return {
        "iss": issuer, "jti": jti, "iat": int(issued_at), "aud": audience,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: event},
    }


def risk_level_change_claims(
    verdict: Verdict, *, issuer: str, audience: str | list[str], issued_at: float
) -> dict[str, Any]:
    """The claims of a CAEP risk-level-change SET for an ``alert`` verdict.

    The ``jti`` is derived from the verdict's event id, so a verdict read twice
    gives the same SET id; ``txn`` is that event id.

    >>> from intentwatch.contracts import Reason
    >>> verdict = Verdict(event_id="e7", agent_id="spiffe://acme.org/agents/a1",
    ...     task_id="t1", tool="crm.export", ts="2026-11-02T08:00:00Z", score=0.71,
    ...     decision="alert", reasons=[Reason(code="volume", weight=0.4, detail="...")])
    >>> claims = risk_level_change_claims(verdict, issuer="https://ssf.acme.org",
    ...     audience="https://broker.acme.org", issued_at=1793606401)
    >>> claims["events"][RISK_LEVEL_CHANGE]["current_level"], claims["txn"]
    ('MEDIUM', 'e7')
    """
    if verdict.decision != "alert":
        raise ValueError(f"a risk-level-change is sent for alert verdicts, not {verdict.decision}")
    reason = verdict.reasons[0].code if verdict.reasons else "score"
    return {
        "iss": issuer,
        "jti": str(uuid.uuid5(_RISK_NAMESPACE, verdict.event_id)),
        "iat": int(issued_at),
        "aud": audience,
        "txn": verdict.event_id,
        "sub_id": {
            "format": "complex",
            "application": {"format": "uri", "uri": verdict.agent_id},
            "session": {"format": "opaque", "id": verdict.task_id},
        },
        "events": {
            RISK_LEVEL_CHANGE: {
                "principal": "SESSION",
                "current_level": "MEDIUM",
                "risk_reason": reason,
                "event_timestamp": int(datetime.fromisoformat(verdict.ts).timestamp()),
            }
        },
        "intentwatch": {"task_id": verdict.task_id, "event_id": verdict.event_id,
                        "score": verdict.score},
    }


def sign_set(claims: dict[str, Any], key: SigningKey) -> str:
    """``claims`` as a compact JWS SET (``typ: secevent+jwt``) signed by ``key``."""
    return key.sign(msgspec.json.encode(claims), typ=SET_TYPE)
