"""A reference credential broker: per-task tokens, signed grants, revocations obeyed.

This is what intentwatch expects of the party that hands agents their credentials:

1. for every task, issue a short-lived token that only the agent holds, and
   publish the task's *grant* (the approved intent: tools, targets, data
   labels) signed with the broker's key, so intentwatch knows what was approved;
2. publish the broker's public keys (:meth:`CredentialBroker.jwks`), which the
   worker trusts through ``INTENTWATCH_GRANT_ISSUERS_JWKS``;
3. follow intentwatch's revocations and refuse a revoked token from then on
   (:meth:`CredentialBroker.check`, asked by the tool gateway before every call).

Tokens are JWTs signed by the broker (``iss`` the broker, ``sub`` the agent,
``jti`` the *credential id*, a short ``exp``); the broker keeps only their
SHA-256. The credential id appears in grants, telemetry and revocations, and the
grant names the token (``token``: its ``iss`` and ``jti``), so intentwatch's
revocations name it as the session they end. The state lives in memory: a
production broker keeps it in its database.

Example::

    publisher = TelemetryPublisher(bootstrap)
    broker = CredentialBroker(publisher, ttl=300)
    Path("broker-jwks.json").write_text(json.dumps(broker.jwks()))   # for the worker
    broker.follow(RevocationSubscriber(bootstrap, jwks=worker_jwks_url))

    credential = broker.issue(agent_id, "ticket-42", intent="answer ticket 42",
                              tools=["crm.*"], targets=["crm.acme.org"],
                              data_labels=["internal", "pii"])
    broker.check(credential.token).status     # 'valid', later 'revoked' or 'expired'
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from intentwatch.contracts import Revocation
from intentwatch.sdk.publisher import TelemetryPublisher
from intentwatch.sdk.subscriber import RevocationSubscriber
from intentwatch.tokens.grants import sign_grant
from intentwatch.tokens.keys import SigningKey, generate_key

__all__ = ["CredentialBroker", "CredentialCheck", "RevokedCredential", "TaskCredential"]

log = logging.getLogger("intentwatch.reference.broker")

Status = Literal["valid", "expired", "revoked", "unknown"]


@dataclass(frozen=True, slots=True)
class TaskCredential:
    """A credential for one task of one agent. ``token`` is the secret the agent presents."""

    token: str = field(repr=False)
    credential_id: str
    agent_id: str
    task_id: str
    grant_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RevokedCredential:
    """Why a credential was revoked and when the broker learned it."""

    credential_id: str
    revocation: Revocation
    received_at: float
    """Epoch seconds when the revocation reached the broker."""


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    """The broker's answer for a presented token."""

    status: Status
    credential: TaskCredential | None = None
    """The credential the token belongs to (``None`` when ``unknown``)."""
    revoked: RevokedCredential | None = None
    """The revocation, when ``revoked``."""


class CredentialBroker:
    """Issue per-task tokens, publish signed grants, and obey intentwatch's revocations.

    Parameters
    ----------
    publisher
        Where the signed grants go (the agents' input topic, ``intentwatch.events.v1``).
    key
        The broker's grant-signing key; a new ES256 key when omitted.
    issuer
        The ``issuer`` written in every grant.
    ttl
        Default lifetime of a task's token and grant, in seconds.
    """

    def __init__(
        self,
        publisher: TelemetryPublisher,
        *,
        key: SigningKey | None = None,
        issuer: str = "urn:intentwatch:reference-broker",
        ttl: float = 300.0,
    ) -> None:
        self.publisher = publisher
        self.key = key or generate_key("ES256")
        self.issuer = issuer
        self.ttl = ttl
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, TaskCredential] = {}
        self._by_task: dict[tuple[str, str], list[str]] = {}
        self._revoked: dict[str, RevokedCredential] = {}
        self._subscriber: RevocationSubscriber | None = None

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The broker's public JWKS: give it to the worker as ``INTENTWATCH_GRANT_ISSUERS_JWKS``."""
        return {"keys": [self.key.public_jwk()]}

    def issue(
        self,
        agent_id: str,
        task_id: str,
        *,
        intent: str,
        tools: Sequence[str],
        targets: Sequence[str],
        data_labels: Sequence[str],
        ttl: float | None = None,
    ) -> TaskCredential:
        """Mint a token for ``task_id`` and publish the task's signed grant."""
        now = time.time()
        credential_id = f"cred-{uuid.uuid4().hex}"
        expires_at = now + (self.ttl if ttl is None else ttl)
        claims = {"iss": self.issuer, "sub": agent_id, "jti": credential_id,
                  "iat": int(now), "exp": int(expires_at)}
        credential = TaskCredential(
            token=self.key.sign(json.dumps(claims).encode(), typ="JWT"),
            credential_id=credential_id,
            agent_id=agent_id,
            task_id=task_id,
            grant_id=f"grant-{uuid.uuid4().hex}",
            expires_at=expires_at,
        )
        grant = {
            "grant_id": credential.grant_id, "agent_id": agent_id, "task_id": task_id,
            "credential_ids": [credential_id], "intent": intent,
            "tools": list(tools), "targets": list(targets), "data_labels": list(data_labels),
            "issued_at": now, "expires_at": expires_at, "issuer": self.issuer,
            "token": {"iss": self.issuer, "jti": credential_id},
        }
        self.publisher.publish_grant(sign_grant(grant, self.key))
        with self._lock:
            self._by_digest[_digest(credential.token)] = credential
            self._by_task.setdefault((agent_id, task_id), []).append(credential.credential_id)
        return credential

    def check(self, token: str) -> CredentialCheck:
        """Whether ``token`` may be used now: ``valid``, ``expired``, ``revoked`` or ``unknown``."""
        with self._lock:
            credential = self._by_digest.get(_digest(token))
            revoked = self._revoked.get(credential.credential_id) if credential else None
        if credential is None:
            return CredentialCheck("unknown")
        if revoked is not None:
            return CredentialCheck("revoked", credential, revoked)
        if time.time() >= credential.expires_at:
            return CredentialCheck("expired", credential)
        return CredentialCheck("valid", credential)

    def revoke(self, revocation: Revocation) -> list[str]:
        """Apply a revocation: the credentials it names and every credential of its task.

        Returns the ids newly revoked. :meth:`follow` calls this for you.
        """
        received_at = time.time()
        with self._lock:
            ids = [*revocation.credential_ids,
                   *self._by_task.get((revocation.agent_id, revocation.task_id), ())]
            fresh = [cid for cid in dict.fromkeys(ids) if cid not in self._revoked]
            for cid in fresh:
                self._revoked[cid] = RevokedCredential(cid, revocation, received_at)
        if fresh:
            log.info("revoked %d credential(s) of task %s (%s)", len(fresh), revocation.task_id,
                     revocation.reason_code)
        return fresh

    def revoked(self, credential_id: str) -> RevokedCredential | None:
        """The revocation of ``credential_id``, if it has one."""
        with self._lock:
            return self._revoked.get(credential_id)

    def follow(
        self,
        subscriber: RevocationSubscriber,
        on_revocation: Callable[[Revocation], None] | None = None,
    ) -> None:
        """Apply every revocation ``subscriber`` delivers, from its background thread.

        ``on_revocation`` is called after each one is applied (e.g. to show it).
        """
        def apply(revocation: Revocation) -> None:
            self.revoke(revocation)
            if on_revocation is not None:
                on_revocation(revocation)

        self._subscriber = subscriber
        subscriber.run(apply)

    def close(self) -> None:
        """Stop following revocations."""
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None

    def __enter__(self) -> CredentialBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
