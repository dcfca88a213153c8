"""Forged attribution and replayed tokens (issue 10, rows 7 and 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentwatch.contracts import Revocation
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.worker import grant_verifier
from intentwatch.tokens.grants import GrantRejected, GrantVerifier, sign_grant
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import (
    RevocationRejected,
    RevocationVerifier,
    encode_revocation,
)

BROKER, HR = generate_key("EdDSA"), generate_key("ES256")
AGENT = "spiffe://acme.org/agents/support/a1"
PAYLOAD = {"grant_id": "g1", "agent_id": AGENT, "task_id": "t1", "credential_ids": ["c1"],
           "tools": ["crm.*"], "targets": ["crm://*"], "data_labels": ["internal"],
           "issued_at": 1000.0, "expires_at": 2000.0, "issuer": "https://broker.acme.org"}
TRUST = {"issuers": {"https://broker.acme.org": {"keys": [BROKER.public_jwk()]},
                     "https://hr.acme.org": {"keys": [HR.public_jwk()]}}}


def test_a_grant_naming_another_trusted_issuer_than_its_signer_is_rejected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(TRUST))
    verifier = grant_verifier(Settings(grant_issuers_jwks=path))
    assert verifier.binds_issuers
    assert verifier.verify(sign_grant(PAYLOAD, BROKER), AGENT, now=1500.0).grant_id == "g1"
    with pytest.raises(GrantRejected) as error:
        verifier.verify(sign_grant(PAYLOAD, HR), AGENT, now=1500.0)
    assert error.value.code == "issuer_mismatch"


def test_a_plain_jwks_does_not_bind_issuers_and_the_worker_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [BROKER.public_jwk(), HR.public_jwk()]}))
    assert not grant_verifier(Settings(grant_issuers_jwks=path)).binds_issuers
    assert "plain JWKS" in caplog.text


@pytest.mark.parametrize(
    "trust",
    [{"issuers": {"a": {"keys": [{**BROKER.public_jwk(), "kid": None}]}}},
     {"issuers": {"a": {"keys": [BROKER.public_jwk()]}, "b": {"keys": [BROKER.public_jwk()]}}}],
    ids=["key_without_kid", "key_of_two_issuers"],
)
def test_an_ambiguous_trust_document_is_refused(trust: dict) -> None:
    with pytest.raises(ValueError):
        GrantVerifier(trust)


def test_a_revocation_older_than_the_accepted_age_is_stale() -> None:
    key = generate_key("ES256")
    revocation = Revocation(revocation_id="r1", agent_id=AGENT, task_id="t1",
                            credential_ids=["c1"], reason_code="intent_violation",
                            reason="outside grant", score=1.0, event_ts=1000.0)
    token = encode_revocation(revocation, key, issuer="urn:iw", audience="urn:b",
                              issued_at=1000.0).token
    verifier = RevocationVerifier({"keys": [key.public_jwk()]}, max_age=3600.0)
    assert verifier.verify(token, now=4600.0).revocation_id == "r1"
    with pytest.raises(RevocationRejected) as error:
        verifier.verify(token, now=4601.0)
    assert error.value.code == "stale"
