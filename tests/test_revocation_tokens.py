import json
import re
from datetime import datetime

import jsonschema
import msgspec
import pytest

from intentwatch.contracts import ContractError, JwtId, Revocation
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import (
    CONTENT_TYPE,
    SESSION_REVOKED,
    RevocationClaims,
    RevocationRejected,
    RevocationVerifier,
    encode_revocation,
    revocation_claims,
)
from tests import forge

ISSUER = "https://intentwatch.acme.org"
BROKER = "https://broker.acme.org"
IAT = 1_793_606_401.7


def revocation(**changes) -> Revocation:
    fields = {
        "revocation_id": "rev-5f2c",
        "agent_id": "spiffe://acme.org/agents/support/a1",
        "task_id": "t1",
        "credential_ids": ["c1", "c2"],
        "reason_code": "intent_violation",
        "reason": "gmail.send_email to mailto:x@evil.example is outside the grant",
        "score": 0.97,
        "evidence": ["e7", "e9"],
        "event_ts": 1_793_606_400.25,
    }
    fields.update(changes)
    return Revocation(**fields)


@pytest.fixture(scope="module")
def key():
    return generate_key("ES256")


@pytest.fixture(scope="module")
def verifier(key):
    return RevocationVerifier({"keys": [key.public_jwk()]}, audience=BROKER, issuer=ISSUER)


def sign(key, rev=None, audience=BROKER, issuer=ISSUER) -> str:
    rev = rev or revocation()
    return encode_revocation(rev, key, issuer=issuer, audience=audience, issued_at=IAT).token


def rejection(verifier, token) -> str:
    with pytest.raises(RevocationRejected) as caught:
        verifier.verify(token)
    assert isinstance(caught.value, ContractError)
    return caught.value.code


def test_claims_follow_caep_session_revoked(key):
    _, payload, _ = forge.segments(sign(key))
    assert json.loads(payload) == {
        "iss": ISSUER,
        "jti": "rev-5f2c",
        "iat": 1_793_606_401,
        "aud": BROKER,
        "txn": "rev-5f2c",
        "sub_id": {
            "format": "complex",
            "application": {"format": "uri", "uri": "spiffe://acme.org/agents/support/a1"},
            "session": {"format": "opaque", "id": "t1"},
        },
        "events": {
            SESSION_REVOKED: {
                "initiating_entity": "policy",
                "reason_admin": {"en": revocation().reason},
                "event_timestamp": 1_793_606_400,
            }
        },
        "intentwatch": {
            "task_id": "t1",
            "credential_ids": ["c1", "c2"],
            "reason_code": "intent_violation",
            "score": 0.97,
            "evidence": ["e7", "e9"],
        },
    }


def test_the_session_is_the_tasks_token_when_the_grant_names_it(key, verifier):
    token = JwtId(iss="https://broker.acme.org", jti="c1")
    rev = revocation(session_token=token, reason_user="Your agent's access to this task ended.")
    claims = json.loads(forge.segments(sign(key, rev))[1])
    assert claims["sub_id"] == {
        "format": "complex",
        "application": {"format": "uri", "uri": "spiffe://acme.org/agents/support/a1"},
        "session": {"format": "jwt_id", "iss": "https://broker.acme.org", "jti": "c1"},
    }
    event = claims["events"][SESSION_REVOKED]
    assert event["reason_user"] == {"en": "Your agent's access to this task ended."}
    assert claims["intentwatch"]["task_id"] == "t1"
    assert verifier.verify(sign(key, rev)) == msgspec.structs.replace(rev, event_ts=1_793_606_400.0)


@pytest.mark.parametrize("rev", [revocation(), revocation(
    session_token=JwtId(iss="https://broker.acme.org", jti="c1"), reason_user="Access ended.")])
def test_claims_meet_the_specifications(key, rev):
    """RFC 8417, SSF 1.0 and CAEP 1.0 requirements, one by one."""
    header, payload, _ = forge.segments(sign(key, rev))
    claims = json.loads(payload)
    assert header["typ"] == "secevent+jwt"                   # RFC 8417 2.3, SSF explicit typing
    assert {"iss", "jti", "iat", "events"} <= set(claims)    # RFC 8417 2.2 required claims
    assert isinstance(claims["iat"], int)                    # NumericDate
    assert "sub" not in claims and "exp" not in claims       # SSF: no `sub`, no `exp`
    assert len(claims["events"]) == 1                        # SSF, CAEP interop: one event
    assert claims["txn"] == rev.revocation_id                # SSF: unique to the cause
    subject = claims["sub_id"]                               # SSF: top-level `sub_id`
    assert subject["format"] == "complex" and set(subject) == {"format", "application", "session"}
    session = subject["session"]
    assert session["format"] in ("opaque", "jwt_id")
    if session["format"] == "jwt_id":                        # SSF jwt_id: `iss` and `jti`
        assert set(session) == {"format", "iss", "jti"}
    event = claims["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]
    assert event["initiating_entity"] == "policy"            # CAEP: admin|user|policy|system
    for name in ("reason_admin", "reason_user"):             # CAEP: BCP 47 tag -> text
        if name in event:
            assert event[name] and all(re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", tag)
                                       and text for tag, text in event[name].items())
    assert "reason_admin" in event                           # interop profile: non-empty
    assert ("reason_user" in event) == (rev.reason_user is not None)
    assert isinstance(event["event_timestamp"], int)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_round_trip(alg):
    key = generate_key(alg)
    token = sign(key)
    header, _, _ = forge.segments(token)
    assert header == {"alg": alg, "kid": key.kid, "typ": "secevent+jwt"}
    back = RevocationVerifier({"keys": [key.public_jwk()]}).verify(token.encode())
    assert back == msgspec.structs.replace(revocation(), event_ts=1_793_606_400.0)


def test_same_revocation_and_iat_give_the_same_claims(key):
    first, second = sign(key), sign(key)
    assert first.split(".")[:2] == second.split(".")[:2]
    ed = generate_key("EdDSA")
    assert sign(ed) == sign(ed)
    assert revocation_claims(revocation(), issuer=ISSUER, audience=BROKER, issued_at=IAT) == (
        revocation_claims(revocation(), issuer=ISSUER, audience=BROKER, issued_at=IAT + 0.2)
    )
    later = sign(key, revocation(revocation_id="rev-other"))
    assert later.split(".")[1] != first.split(".")[1]


def test_cloudevents_headers_match_the_claims(key):
    signed = encode_revocation(revocation(), key, issuer=ISSUER, audience=BROKER, issued_at=IAT)
    headers = dict(signed.headers)
    assert len(headers) == len(signed.headers)
    assert set(headers) == {
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_subject",
        "ce_time",
        "content-type",
    }
    assert all(isinstance(value, bytes) for value in headers.values())
    claims = json.loads(forge.segments(signed.token)[1])
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"].decode() == claims["jti"]
    assert headers["ce_type"].decode() in claims["events"]
    assert headers["ce_source"].decode() == claims["iss"]
    assert headers["ce_subject"].decode() == claims["sub_id"]["application"]["uri"]
    ce_time = datetime.fromisoformat(headers["ce_time"].decode()).timestamp()
    assert ce_time == revocation().event_ts
    assert int(ce_time) == claims["events"][SESSION_REVOKED]["event_timestamp"]
    assert headers["content-type"] == CONTENT_TYPE.encode() == b"application/secevent+jwt"
    assert msgspec.to_builtins(signed.claims) == claims


def test_emitted_claims_match_the_json_schema(key):
    schema = msgspec.json.schema(RevocationClaims)
    for audience in (BROKER, [BROKER, "https://gateway.acme.org"]):
        claims = json.loads(forge.segments(sign(key, audience=audience))[1])
        jsonschema.validate(claims, schema)
    del claims["events"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(claims, schema)


def test_audience_and_issuer(key, verifier):
    assert verifier.verify(sign(key, audience=["https://other", BROKER])).task_id == "t1"
    assert rejection(verifier, sign(key, audience="https://other")) == "wrong_audience"
    assert rejection(verifier, sign(key, audience=["https://a", "https://b"])) == "wrong_audience"
    assert rejection(verifier, sign(key, issuer="https://rogue.example")) == "wrong_issuer"
    anyone = RevocationVerifier({"keys": [key.public_jwk()]})
    assert anyone.verify(sign(key, audience="https://other", issuer="https://x")).task_id == "t1"


def test_tampering_is_a_bad_signature(key, verifier):
    token = sign(key)
    claims = json.loads(forge.segments(token)[1])
    claims["intentwatch"]["credential_ids"] = ["someone-elses-credential"]
    assert rejection(verifier, forge.with_payload(token, claims)) == "bad_signature"


def test_unknown_key(verifier):
    assert rejection(verifier, sign(generate_key())) == "unknown_kid"


def test_alg_none_and_hmac_confusion(key, verifier):
    claims = json.loads(forge.segments(sign(key))[1])
    none = forge.unsecured(claims, kid=key.kid, typ="secevent+jwt")
    assert rejection(verifier, none) == "alg_not_allowed"
    confused = forge.hmac_with_public_key(claims, key.public_jwk(), typ="secevent+jwt")
    assert rejection(verifier, confused) == "alg_not_allowed"


def test_wrong_type(key, verifier):
    token = sign(key)
    assert rejection(verifier, forge.with_header(token, typ="JWT")) == "wrong_type"
    assert rejection(verifier, forge.with_header(token, typ=None)) == "wrong_type"
    payload = forge.segments(token)[1]
    assert verifier.verify(key.sign(payload, typ="application/SECEVENT+JWT")).task_id == "t1"


def test_malformed(key, verifier):
    for token in ("", "not a token", "a.b.c", b"\xff.\xfe.\xfd"):
        assert rejection(verifier, token) == "malformed"
    claims = json.loads(forge.segments(sign(key))[1])
    del claims["events"]
    with pytest.raises(RevocationRejected, match="`events`") as caught:
        verifier.verify(key.sign(json.dumps(claims).encode(), typ="secevent+jwt"))
    assert caught.value.code == "malformed"
    claims = json.loads(forge.segments(sign(key))[1])
    claims["sub_id"]["session"]["id"] = "t2"
    assert rejection(verifier, key.sign(json.dumps(claims).encode(), typ="secevent+jwt")) == (
        "malformed"
    )
    claims["sub_id"]["session"]["id"] = "t1"
    claims["events"][SESSION_REVOKED]["reason_admin"] = {}
    assert rejection(verifier, key.sign(json.dumps(claims).encode(), typ="secevent+jwt")) == (
        "malformed"
    )
    claims["events"][SESSION_REVOKED]["reason_admin"] = {"en": "policy"}
    claims["intentwatch"]["reason_code"] = "boredom"
    assert rejection(verifier, key.sign(json.dumps(claims).encode(), typ="secevent+jwt")) == (
        "malformed"
    )


def test_verifying_our_own_keyring(tmp_path):
    from intentwatch.tokens.keys import Keyring

    ring = Keyring.create(tmp_path / "keys")
    old = sign(ring.active)
    ring.rotate()
    verifier = RevocationVerifier(ring.jwks(), audience=BROKER)
    assert verifier.verify(old) == verifier.verify(sign(ring.active))
