"""Signed grants: a task's approved intent, as a compact JWS from a trusted issuer.

A credential broker signs each grant's JSON payload (the fields of
:class:`~intentwatch.contracts.Grant`) and publishes it on ``intentwatch.events.v1``
(kind ``grant``) keyed by the agent's SPIFFE ID. The pipeline checks it with
:class:`GrantVerifier` before the grant enters state.

Header: ``{"alg", "kid", "typ": "intentwatch-grant+jwt"}``. The explicit type
(RFC 8725, 3.11) keeps any other token the issuer signs from passing as a
grant; ``typ: JWT`` and no ``typ`` are accepted too, as most brokers send
those. Every token must name its key with ``kid``.

>>> from intentwatch.tokens.keys import generate_key
>>> key = generate_key("EdDSA")
>>> payload = {"grant_id": "g1", "agent_id": "spiffe://acme.org/agents/support/a1",
...     "task_id": "t1", "credential_ids": ["c1"], "tools": ["gmail.*"],
...     "targets": ["mailto:*@acme.org"], "data_labels": ["internal"],
...     "issued_at": 1793606400, "expires_at": 1793610000, "issuer": "https://broker.acme.org"}
>>> token = sign_grant(payload, key)
>>> verifier = GrantVerifier({"keys": [key.public_jwk()]})
>>> verifier.verify(token, "spiffe://acme.org/agents/support/a1", now=1793606500).grant_id
'g1'
>>> try:
...     verifier.verify(token, "spiffe://acme.org/agents/other", now=1793606500)
... except GrantRejected as error:
...     print(error.code)
agent_mismatch

A trust document ``{"issuers": {issuer: JWKS, ...}}`` binds each key to its issuer:
a grant must then name, in ``issuer``, the issuer whose key signed it.

>>> other = generate_key("EdDSA")
>>> bound = GrantVerifier({"issuers": {"https://broker.acme.org": {"keys": [key.public_jwk()]},
...                                    "https://hr.acme.org": {"keys": [other.public_jwk()]}}})
>>> try:
...     bound.verify(sign_grant({**payload, "issuer": "https://broker.acme.org"}, other),
...                  now=1793606500)
... except GrantRejected as error:
...     print(error.code)
issuer_mismatch
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import msgspec

from intentwatch.contracts import ContractError, Grant, check_size, decode_grant_payload, format_ts
from intentwatch.tokens.keys import (
    DEFAULT_ALGORITHMS,
    JwksSource,
    JwsVerifier,
    SigningKey,
    TokenRejected,
)

__all__ = [
    "GRANT_REJECTION_CODES", "GRANT_TYPE", "GrantRejected", "GrantVerifier", "TrustSource",
    "sign_grant",
]

GRANT_TYPE = "intentwatch-grant+jwt"
"""The ``typ`` header of grants signed by :func:`sign_grant`."""


GRANT_REJECTION_CODES: tuple[str, ...] = (
    "malformed", "unsigned", "alg_not_allowed", "wrong_type", "unknown_kid", "bad_signature",
    "untrusted_issuer", "issuer_mismatch", "not_yet_valid", "expired", "agent_mismatch",
)
"""Every ``code`` a :class:`GrantRejected` can carry."""


class GrantRejected(TokenRejected):
    """A grant failed verification; ``code`` is one of :data:`GRANT_REJECTION_CODES`."""


TrustSource = JwksSource | Mapping[str, Any]
"""A JWKS (keys of issuers not told apart), or ``{"issuers": {issuer: JWKS}}`` (a dict
or the path of such a JSON file), which binds every key to the issuer it belongs to."""


def _issuer_keys(trust: TrustSource) -> tuple[JwksSource, dict[str, str]]:
    """One JWKS of every trusted key, and the issuer of each key id (empty if unbound)."""
    if isinstance(trust, str | os.PathLike):
        trust = json.loads(Path(trust).read_bytes())
    if not isinstance(trust, Mapping) or "issuers" not in trust:
        return trust, {}
    keys: list[dict[str, Any]] = []
    issuer_of: dict[str, str] = {}
    for issuer, jwks in dict(trust["issuers"]).items():
        for key in jwks.get("keys", []) if isinstance(jwks, Mapping) else ():
            if not isinstance(key, Mapping) or not isinstance(key.get("kid"), str):
                raise ValueError(f"every key of issuer {issuer!r} must have a `kid`")
            if key["kid"] in issuer_of:
                raise ValueError(f"key {key['kid']!r} is listed for two issuers")
            keys.append(dict(key))
            issuer_of[key["kid"]] = issuer
    return {"keys": keys}, issuer_of


def sign_grant(payload: Mapping[str, Any] | Grant, key: SigningKey) -> str:
    """Sign a grant payload as a compact JWS (for brokers, the reference broker and tests).

    The payload is checked against the grant contract first: a broker cannot
    sign a grant that the pipeline would reject as malformed.
    """
    if not isinstance(payload, Grant):
        decode_grant_payload(dict(payload))
    return key.sign(msgspec.json.encode(payload), typ=GRANT_TYPE)


class GrantVerifier:
    """Turn a grant record's value into a trusted :class:`Grant`.

    Parameters
    ----------
    jwks
        Public keys of the trusted issuers (see :func:`intentwatch.tokens.keys.load_jwks`),
        or a :data:`TrustSource` that binds each key to its issuer; ``None`` only with
        ``allow_unsigned``.
    algorithms
        Accepted ``alg`` values; asymmetric only.
    leeway
        Seconds of clock skew tolerated on ``issued_at`` and ``expires_at``.
    allow_unsigned
        Accept plain JSON grants. Development only: anyone who can write to the
        topic can then grant anything.
    issuers
        If given, the only accepted values of the grant's ``issuer``.
    """

    def __init__(
        self,
        jwks: TrustSource | None,
        *,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        allow_unsigned: bool = False,
        issuers: Collection[str] | None = None,
    ) -> None:
        if jwks is None and not allow_unsigned:
            raise ValueError("a JWKS of the trusted issuers is required unless allow_unsigned")
        self.leeway = leeway
        self.allow_unsigned = allow_unsigned
        self.issuers = frozenset(issuers) if issuers is not None else None
        jwks, self._issuer_of = _issuer_keys(jwks) if jwks is not None else (None, {})
        self._jws = JwsVerifier(
            jwks,
            types=(GRANT_TYPE, "JWT", None),
            algorithms=algorithms,
            rejected=GrantRejected,
        )

    def verify(
        self,
        value: bytes | str,
        record_key: str | bytes | None = None,
        now: float | Callable[[Grant], float] | None = None,
    ) -> Grant:
        """The grant in ``value``, or raise :class:`GrantRejected`.

        ``record_key`` is the Kafka record key (the agent's SPIFFE ID; ``None``
        skips that check, e.g. in replay) and ``now`` the time to judge
        validity at (default: the clock), or a function of the grant giving it
        (the worker's stream time once it has read the grant).
        """
        data = value.encode() if isinstance(value, str) else value
        check_size(data, "grant")
        if data.lstrip()[:1] == b"{":
            if not self.allow_unsigned:
                raise GrantRejected("unsigned", "grant is plain JSON, not a signed JWS")
            payload, signer = data, None
        else:
            header, payload = self._jws.verify(data)
            signer = self._issuer_of.get(header["kid"])
        try:
            grant = decode_grant_payload(payload)
        except ContractError as exc:
            raise GrantRejected("malformed", str(exc)) from None
        if signer is not None and grant.issuer != signer:
            raise GrantRejected(
                "issuer_mismatch",
                f"grant {grant.grant_id!r} names issuer {grant.issuer!r} but is signed by a "
                f"key of {signer!r}",
            )
        at = time.time() if now is None else now(grant) if callable(now) else now
        self._check(grant, record_key, at)
        return grant

    @property
    def binds_issuers(self) -> bool:
        """Whether each trusted key belongs to a named issuer (see :data:`TrustSource`)."""
        return bool(self._issuer_of)

    def _check(self, grant: Grant, record_key: str | bytes | None, now: float) -> None:
        if self.issuers is not None and grant.issuer not in self.issuers:
            raise GrantRejected("untrusted_issuer", f"issuer {grant.issuer!r} is not trusted")
        if now + self.leeway < grant.issued_at:
            raise GrantRejected(
                "not_yet_valid",
                f"grant {grant.grant_id!r} is issued at {format_ts(grant.issued_at)}",
            )
        if now - self.leeway >= grant.expires_at:
            raise GrantRejected(
                "expired", f"grant {grant.grant_id!r} expired at {format_ts(grant.expires_at)}"
            )
        if isinstance(record_key, bytes):
            record_key = record_key.decode("utf-8", "replace")
        if record_key is not None and record_key != grant.agent_id:
            raise GrantRejected(
                "agent_mismatch",
                f"grant is for {grant.agent_id!r} but was published under key {record_key!r}",
            )
