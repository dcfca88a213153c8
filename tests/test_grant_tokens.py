import json
import time

import pytest
from joserfc import jws
from joserfc.jwk import JWKRegistry

from intentwatch.contracts import ContractError, Grant
from intentwatch.tokens.grants import GRANT_TYPE, GrantRejected, GrantVerifier, sign_grant
from intentwatch.tokens.keys import generate_key
from tests import forge

AGENT = "spiffe://acme.org/agents/support/a1"
NOW = 1_793_606_400.0


def grant_payload(**changes):
    payload = {
        "grant_id": "g1",
        "agent_id": AGENT,
        "task_id": "t1",
        "credential_ids": ["c1"],
        "intent": "Answer ticket 42 by mail to the customer",
        "tools": ["gmail.*"],
        "targets": ["mailto:*@customer.example"],
        "data_labels": ["internal"],
        "issued_at": NOW - 60,
        "expires_at": NOW + 3600,
        "issuer": "https://broker.acme.org",
    }
    payload.update(changes)
    return payload


@pytest.fixture(scope="module")
def key():
    return generate_key("ES256")


@pytest.fixture(scope="module")
def verifier(key):
    return GrantVerifier({"keys": [key.public_jwk()]})


def rejection(verifier, value, record_key=AGENT, now=NOW) -> str:
    with pytest.raises(GrantRejected) as caught:
        verifier.verify(value, record_key, now)
    assert isinstance(caught.value, ContractError)
    return caught.value.code


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519", "RS256"])
def test_round_trip(alg):
    key = generate_key(alg)
    token = sign_grant(grant_payload(), key)
    header, _, _ = forge.segments(token)
    assert header == {"alg": alg, "kid": key.kid, "typ": GRANT_TYPE}
    grant = GrantVerifier({"keys": [key.public_jwk()]}).verify(token, AGENT, NOW)
    assert isinstance(grant, Grant)
    assert (grant.grant_id, grant.agent_id, grant.tools) == ("g1", AGENT, ["gmail.*"])
    assert grant.expires_at == NOW + 3600


def test_rfc3339_times_bytes_values_and_struct_payloads(key, verifier):
    payload = grant_payload(
        issued_at="2026-11-02T07:59:00Z", expires_at="2026-11-02T09:00:00+00:00"
    )
    grant = verifier.verify(sign_grant(payload, key).encode(), AGENT.encode(), NOW)
    assert (grant.issued_at, grant.expires_at) == (NOW - 60, NOW + 3600)
    assert verifier.verify(sign_grant(grant, key), AGENT, NOW) == grant


def test_typ_jwt_and_no_typ_are_accepted(key, verifier):
    private = JWKRegistry.import_key(key.private_jwk())
    body = json.dumps(grant_payload())
    for header in (
        {"alg": "ES256", "kid": key.kid, "typ": "JWT"},
        {"alg": "ES256", "kid": key.kid},
    ):
        token = jws.serialize_compact(header, body, private)
        assert verifier.verify(token, AGENT, NOW).grant_id == "g1"


def test_wrong_type(key, verifier):
    assert rejection(
        verifier, key.sign(json.dumps(grant_payload()).encode(), typ="secevent+jwt")
    ) == ("wrong_type")


def test_tampered_payload_and_signature_are_bad_signatures(key, verifier):
    token = sign_grant(grant_payload(), key)
    widened = forge.with_payload(token, grant_payload(tools=["*"]))
    assert rejection(verifier, widened) == "bad_signature"
    head, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert rejection(verifier, f"{head}.{body}.{flipped}") == "bad_signature"
    assert rejection(verifier, f"{head}.{body}.") == "bad_signature"


def test_unknown_key(verifier):
    stranger = generate_key("ES256")
    assert rejection(verifier, sign_grant(grant_payload(), stranger)) == "unknown_kid"
    no_kid = forge.with_header(sign_grant(grant_payload(), stranger), kid=None)
    assert rejection(verifier, no_kid) == "unknown_kid"


def test_a_stranger_cannot_borrow_a_trusted_kid(key, verifier):
    stranger = generate_key("ES256", kid=key.kid)
    assert rejection(verifier, sign_grant(grant_payload(), stranger)) == "bad_signature"


def test_alg_none_is_refused(key, verifier):
    token = forge.unsecured(grant_payload(), kid=key.kid, typ=GRANT_TYPE)
    assert rejection(verifier, token) == "alg_not_allowed"


def test_hmac_keyed_with_the_public_key_is_refused(key, verifier):
    token = forge.hmac_with_public_key(grant_payload(), key.public_jwk(), typ=GRANT_TYPE)
    assert rejection(verifier, token) == "alg_not_allowed"
    with pytest.raises(ValueError, match="public keys"):
        GrantVerifier({"keys": [key.public_jwk()]}, algorithms=["ES256", "HS256"])


def test_a_key_cannot_be_used_with_another_algorithm(key, verifier):
    token = forge.with_header(sign_grant(grant_payload(), key), alg="RS256")
    assert rejection(verifier, token) == "alg_not_allowed"
    bare = {name: value for name, value in key.public_jwk().items() if name != "alg"}
    assert rejection(GrantVerifier({"keys": [bare]}), token) == "alg_not_allowed"


def test_algorithms_can_be_narrowed(key):
    strict = GrantVerifier({"keys": [key.public_jwk()]}, algorithms=["EdDSA"])
    assert rejection(strict, sign_grant(grant_payload(), key)) == "alg_not_allowed"


def test_expiry_and_not_before_with_leeway(key, verifier):
    token = sign_grant(grant_payload(), key)
    assert rejection(verifier, token, now=NOW + 3600 + 31) == "expired"
    assert verifier.verify(token, AGENT, NOW + 3600 + 29).grant_id == "g1"
    assert rejection(verifier, token, now=NOW - 60 - 31) == "not_yet_valid"
    assert verifier.verify(token, AGENT, NOW - 60 - 29).grant_id == "g1"
    exact = GrantVerifier({"keys": [key.public_jwk()]}, leeway=0.0)
    assert rejection(exact, token, now=NOW + 3600) == "expired"


def test_agent_mismatch(key, verifier):
    token = sign_grant(grant_payload(), key)
    assert rejection(verifier, token, record_key="spiffe://acme.org/agents/support/a2") == (
        "agent_mismatch"
    )
    assert rejection(verifier, token, record_key=b"spiffe://evil.org/a1") == "agent_mismatch"
    assert verifier.verify(token, None, NOW).agent_id == AGENT


def test_malformed(key, verifier):
    for value in (
        b"",
        b"garbage",
        b"a.b",
        b"a.b.c.d",
        b"!!!.e30.sig",
        b"bnVsbA.e30.sig",
        b"WyJhbGciXQ.e30.sig",
    ):
        assert rejection(verifier, value) == "malformed", value
    incomplete = grant_payload()
    del incomplete["tools"]
    with pytest.raises(GrantRejected, match="`tools`") as caught:
        verifier.verify(key.sign(json.dumps(incomplete).encode(), typ=GRANT_TYPE), AGENT, NOW)
    assert caught.value.code == "malformed"
    assert rejection(verifier, key.sign(b"not json", typ=GRANT_TYPE)) == "malformed"
    bad_agent = json.dumps(grant_payload(agent_id="not-a-spiffe-id")).encode()
    assert rejection(verifier, key.sign(bad_agent, typ=GRANT_TYPE)) == "malformed"


def test_unsigned_grants_need_the_flag(key, verifier):
    plain = json.dumps(grant_payload()).encode()
    assert rejection(verifier, plain) == "unsigned"
    assert rejection(verifier, b"  \n" + plain) == "unsigned"
    dev = GrantVerifier(None, allow_unsigned=True)
    assert dev.verify(plain, AGENT, NOW).grant_id == "g1"
    assert rejection(dev, plain, now=NOW + 7200) == "expired"
    assert rejection(dev, plain, record_key="spiffe://acme.org/x/y") == "agent_mismatch"
    assert rejection(dev, sign_grant(grant_payload(), key)) == "unknown_kid"
    both = GrantVerifier({"keys": [key.public_jwk()]}, allow_unsigned=True)
    assert both.verify(sign_grant(grant_payload(), key), AGENT, NOW).grant_id == "g1"
    assert both.verify(plain, AGENT, NOW).grant_id == "g1"
    with pytest.raises(ValueError, match="allow_unsigned"):
        GrantVerifier(None)


def test_trusted_issuers(key):
    verifier = GrantVerifier({"keys": [key.public_jwk()]}, issuers=["https://broker.acme.org"])
    assert verifier.verify(sign_grant(grant_payload(), key), AGENT, NOW).grant_id == "g1"
    rogue = sign_grant(grant_payload(issuer="https://rogue.example"), key)
    assert rejection(verifier, rogue) == "untrusted_issuer"


def test_sign_grant_refuses_invalid_payloads(key):
    with pytest.raises(ContractError, match="`expires_at`"):
        sign_grant(grant_payload(expires_at=NOW - 3600), key)


def test_the_clock_is_the_default_now(key, verifier):
    payload = grant_payload(issued_at=time.time() - 10, expires_at=time.time() + 60)
    assert verifier.verify(sign_grant(payload, key), AGENT).grant_id == "g1"
    stale = grant_payload(issued_at=1_000_000_000, expires_at=1_000_003_600)
    with pytest.raises(GrantRejected, match="expired"):
        verifier.verify(sign_grant(stale, key), AGENT)
