"""Signed revocations: OpenID CAEP ``session-revoked`` Security Event Tokens.

A :class:`~intentwatch.contracts.Revocation` decided by the engine becomes a Security
Event Token (RFC 8417) signed by intentwatch's active key: a compact JWS with
``typ: secevent+jwt``, published on ``intentwatch.revocations.v1`` with
CloudEvents Kafka binary-mode headers. Credential brokers and gateways verify it
with :class:`RevocationVerifier` and intentwatch's JWKS. The claims
(:class:`RevocationClaims`) are::

    {"iss": issuer, "jti": revocation_id, "iat": issued_at, "aud": audience,
     "txn": revocation_id,
     "sub_id": {"format": "complex",
                "application": {"format": "uri", "uri": agent_id},
                "session": {"format": "jwt_id", "iss": ..., "jti": ...}},
     "events": {SESSION_REVOKED: {"initiating_entity": "policy",
                                  "reason_admin": {"en": reason},
                                  "reason_user": {"en": reason_user},
                                  "event_timestamp": event_ts}},
     "intentwatch": {"task_id", "credential_ids", "reason_code", "score", "evidence"}}

They follow the OpenID Shared Signals Framework 1.0 profile of SETs and CAEP 1.0:
explicit ``typ: secevent+jwt``; no ``sub`` and no ``exp``; one event per SET; the
subject in the top-level ``sub_id``, a ``complex`` subject whose ``session`` is the
task's access token as a ``jwt_id`` (its ``iss`` and ``jti``) when the grant names
one, else the task id as an ``opaque`` id; ``txn`` unique to the cause (the
revocation id); ``reason_admin`` and, when given, ``reason_user`` tagged by
language. Times are whole epoch seconds, so ``event_ts`` comes back truncated.

>>> from intentwatch.contracts import Revocation
>>> from intentwatch.tokens.keys import generate_key
>>> key = generate_key("ES256")
>>> rev = Revocation(revocation_id="r1", agent_id="spiffe://acme.org/agents/a1",
...     task_id="t1", credential_ids=["c1"], reason_code="intent_violation",
...     reason="sent mail outside acme.org", score=0.97, evidence=["e7"], event_ts=1793606400.5)
>>> signed = encode_revocation(rev, key, issuer="https://intentwatch.acme.org",
...     audience="https://broker.acme.org", issued_at=1793606401.0)
>>> dict(signed.headers)["ce_id"]
b'r1'
>>> verifier = RevocationVerifier({"keys": [key.public_jwk()]}, audience="https://broker.acme.org")
>>> verifier.verify(signed.token).reason
'sent mail outside acme.org'
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from intentwatch.contracts import JwtId, ReasonCode, Revocation, format_ts
from intentwatch.tokens.keys import (
    DEFAULT_ALGORITHMS,
    JwksSource,
    JwsVerifier,
    SigningKey,
    TokenRejected,
)

__all__ = [
    "CONTENT_TYPE",
    "SESSION_REVOKED",
    "SET_TYPE",
    "ComplexSubject",
    "IntentwatchClaim",
    "JwtIdSubject",
    "OpaqueSubject",
    "RevocationClaims",
    "RevocationEvents",
    "RevocationRejected",
    "RevocationVerifier",
    "SessionRevoked",
    "SignedRevocation",
    "UriSubject",
    "encode_revocation",
    "revocation_claims",
]

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
"""The CAEP session-revoked event type; also the CloudEvents ``ce_type``."""
SET_TYPE = "secevent+jwt"
"""The JWS ``typ`` of a Security Event Token (RFC 8417, 2.3)."""
CONTENT_TYPE = "application/secevent+jwt"
"""The Kafka ``content-type`` header of a revocation record."""


LanguageTagged = Annotated[dict[str, str], Meta(min_length=1)]
"""A CAEP localizable text: BCP 47 language tag -> text, at least one."""


class UriSubject(Struct, tag_field="format", tag="uri", kw_only=True):
    """RFC 9493 ``uri`` subject identifier."""

    uri: str


class OpaqueSubject(Struct, tag_field="format", tag="opaque", kw_only=True):
    """RFC 9493 ``opaque`` subject identifier."""

    id: str


class JwtIdSubject(Struct, tag_field="format", tag="jwt_id", kw_only=True):
    """SSF 1.0 ``jwt_id`` subject identifier: a JWT by its issuer and id."""

    iss: str
    jti: str


class ComplexSubject(Struct, tag_field="format", tag="complex", kw_only=True):
    """SSF 1.0 ``complex`` subject: the agent (application) and its task (session).

    The session is the task's access token (``jwt_id``) when its grant names
    one, else the task id (``opaque``).
    """

    application: UriSubject
    session: JwtIdSubject | OpaqueSubject


class SessionRevoked(Struct, kw_only=True, omit_defaults=True):
    """The CAEP ``session-revoked`` event claims."""

    initiating_entity: Literal["admin", "user", "policy", "system"]
    reason_admin: LanguageTagged
    """The reason for administrators, by language tag."""
    reason_user: LanguageTagged | None = None
    """The reason to show the agent's user, by language tag, when given."""
    event_timestamp: int


class RevocationEvents(Struct, kw_only=True):
    """The SET ``events`` claim: one CAEP session-revoked event."""

    session_revoked: SessionRevoked = msgspec.field(name=SESSION_REVOKED)


class IntentwatchClaim(Struct, kw_only=True):
    """intentwatch's private claim: what to revoke and why."""

    task_id: str
    credential_ids: list[str]
    reason_code: ReasonCode
    score: Annotated[float, Meta(ge=0.0, le=1.0)]
    evidence: list[str]
    """Ids of the tool-call events behind the decision."""


class RevocationClaims(Struct, kw_only=True):
    """The claims of a revocation SET (``intentwatch.revocations.v1``)."""

    iss: str
    jti: str
    iat: int
    aud: str | list[str]
    txn: str
    """Unique to the cause (the revocation id), shared by every SET sent for it."""
    sub_id: ComplexSubject
    events: RevocationEvents
    intentwatch: IntentwatchClaim


@dataclass(frozen=True, slots=True)
class SignedRevocation:
    """A revocation ready to publish: the SET and its Kafka headers."""

    token: str
    """The compact JWS: the record value (UTF-8)."""
    headers: list[tuple[str, bytes]]
    """CloudEvents Kafka binary-mode headers and ``content-type``."""
    claims: RevocationClaims


class RevocationRejected(TokenRejected):
    """A revocation failed verification. ``code`` is one of ``malformed``,
    ``alg_not_allowed``, ``wrong_type``, ``unknown_kid``, ``bad_signature``,
    ``wrong_issuer``, ``wrong_audience``, ``stale``."""


def revocation_claims(
    rev: Revocation, *, issuer: str, audience: str | list[str], issued_at: float
) -> RevocationClaims:
    """The SET claims of ``rev``: the same inputs always give the same claims."""
    token = rev.session_token
    session = (
        JwtIdSubject(iss=token.iss, jti=token.jti) if token else OpaqueSubject(id=rev.task_id)
    )
    return RevocationClaims(
        iss=issuer,
        jti=rev.revocation_id,
        iat=int(issued_at),
        aud=audience,
        txn=rev.revocation_id,
        sub_id=ComplexSubject(application=UriSubject(uri=rev.agent_id), session=session),
        events=RevocationEvents(
            session_revoked=SessionRevoked(
                initiating_entity="policy",
                reason_admin={"en": rev.reason},
                reason_user={"en": rev.reason_user} if rev.reason_user else None,
                event_timestamp=int(rev.event_ts),
            )
        ),
        intentwatch=IntentwatchClaim(
            task_id=rev.task_id,
            credential_ids=list(rev.credential_ids),
            reason_code=rev.reason_code,
            score=rev.score,
            evidence=list(rev.evidence),
        ),
    )


def encode_revocation(
    rev: Revocation,
    key: SigningKey,
    *,
    issuer: str,
    audience: str | list[str],
    issued_at: float,
) -> SignedRevocation:
    """Sign ``rev`` as a CAEP session-revoked SET with ``key`` (the keyring's active key)."""
    claims = revocation_claims(rev, issuer=issuer, audience=audience, issued_at=issued_at)
    token = key.sign(msgspec.json.encode(claims), typ=SET_TYPE)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", rev.revocation_id.encode()),
        ("ce_type", SESSION_REVOKED.encode()),
        ("ce_source", issuer.encode()),
        ("ce_subject", rev.agent_id.encode()),
        ("ce_time", format_ts(rev.event_ts).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    return SignedRevocation(token=token, headers=headers, claims=claims)


_claims_decoder = msgspec.json.Decoder(RevocationClaims)


class RevocationVerifier:
    """Check a revocation SET and turn it back into a :class:`Revocation`.

    Trust the token only: the CloudEvents headers are not signed.

    Parameters
    ----------
    jwks
        intentwatch's public keys (``/.well-known/jwks.json``, or
        ``intentwatch keys jwks``); see :func:`intentwatch.tokens.keys.load_jwks`.
    audience
        If given, ``aud`` must name it.
    issuer
        If given, ``iss`` must equal it.
    algorithms
        Accepted ``alg`` values; asymmetric only.
    max_age
        If given, a token issued (``iat``) more than this many seconds before ``now``
        is ``stale``: a genuine revocation replayed later is refused.
    """

    def __init__(
        self,
        jwks: JwksSource,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        max_age: float | None = None,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.max_age = max_age
        self._jws = JwsVerifier(
            jwks, types=(SET_TYPE,), algorithms=algorithms, rejected=RevocationRejected
        )

    def verify(self, token: bytes | str, now: float | None = None) -> Revocation:
        """The revocation in ``token``, or raise :class:`RevocationRejected`.

        ``now`` is the time ``max_age`` counts back from (default: the clock).
        """
        _, payload = self._jws.verify(token)
        try:
            claims = _claims_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise RevocationRejected("malformed", f"revocation claims: {exc}") from None
        extra = claims.intentwatch
        session = claims.sub_id.session
        if isinstance(session, OpaqueSubject) and session.id != extra.task_id:
            raise RevocationRejected("malformed", "the `sub_id` session is not the task")
        if self.issuer is not None and claims.iss != self.issuer:
            raise RevocationRejected("wrong_issuer", f"issuer {claims.iss!r} is not trusted")
        audiences = [claims.aud] if isinstance(claims.aud, str) else claims.aud
        if self.audience is not None and self.audience not in audiences:
            raise RevocationRejected("wrong_audience", f"not addressed to {self.audience!r}")
        age = (time.time() if now is None else now) - claims.iat
        if self.max_age is not None and age > self.max_age:
            raise RevocationRejected(
                "stale", f"issued {age:,.0f} s ago, more than the {self.max_age:g} s accepted"
            )
        event = claims.events.session_revoked
        return Revocation(
            revocation_id=claims.jti,
            agent_id=claims.sub_id.application.uri,
            task_id=extra.task_id,
            credential_ids=extra.credential_ids,
            reason_code=extra.reason_code,
            reason=_english(event.reason_admin) or "",
            reason_user=_english(event.reason_user) if event.reason_user else None,
            score=extra.score,
            evidence=extra.evidence,
            event_ts=float(event.event_timestamp),
            session_token=(
                JwtId(iss=session.iss, jti=session.jti)
                if isinstance(session, JwtIdSubject) else None
            ),
        )


def _english(text: dict[str, str]) -> str | None:
    """The English text of a language-tagged claim, else its first text."""
    return text.get("en", next(iter(text.values()), None))
