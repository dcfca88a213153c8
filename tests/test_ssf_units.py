"""The SSF transmitter's parts without Kafka: stream requests, outbox order and cursor,
receivers' bearer tokens, and the claims of the transmitter's own SETs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import msgspec
import pytest

from intentwatch.contracts import Reason, Verdict
from intentwatch.ssf.events import (
    RISK_LEVEL_CHANGE,
    VERIFICATION,
    risk_level_change_claims,
    sign_set,
    verification_claims,
)
from intentwatch.ssf.outbox import Outbox
from intentwatch.ssf.receivers import load_receivers
from intentwatch.ssf.server import metadata
from intentwatch.ssf.streams import (
    POLL,
    PUSH,
    StreamError,
    create_stream,
    decode_stream,
    encode_stream,
    replace_stream,
    update_stream,
)
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import SESSION_REVOKED
from tests import forge

ISSUER = "https://ssf.acme.org"
SUPPORTED = [SESSION_REVOKED]


def stream(**body):
    return create_stream(body, stream_id="s1", owner="broker-a", aud="urn:broker-a",
                         issuer=ISSUER)


# -- streams ------------------------------------------------------------------------------


def test_a_stream_without_delivery_is_polled_at_an_endpoint_the_transmitter_names():
    config = stream().config(issuer=ISSUER, supported=SUPPORTED)
    assert config == {
        "stream_id": "s1", "iss": ISSUER, "aud": "urn:broker-a",
        "delivery": {"method": POLL, "endpoint_url": f"{ISSUER}/ssf/poll/s1"},
        "events_supported": SUPPORTED, "events_delivered": SUPPORTED,
    }
    polled = stream(delivery={"method": POLL, "endpoint_url": "https://elsewhere"})
    assert polled.delivery.endpoint_url == f"{ISSUER}/ssf/poll/s1"


def test_push_needs_an_endpoint_and_never_reads_back_its_authorization_header():
    pushed = stream(delivery={"method": PUSH, "endpoint_url": "https://rx.acme.org/events",
                              "authorization_header": "Bearer push-secret"})
    assert pushed.delivery.authorization_header == "Bearer push-secret"
    config = pushed.config(issuer=ISSUER, supported=SUPPORTED)
    assert config["delivery"] == {"method": PUSH, "endpoint_url": "https://rx.acme.org/events"}
    assert "push-secret" not in json.dumps(config)
    for delivery in ({"method": PUSH}, {"method": PUSH, "endpoint_url": "ftp://x"},
                     {"method": "urn:example:carrier-pigeon"}, "push"):
        with pytest.raises(StreamError) as error:
            stream(delivery=delivery)
        assert error.value.status == 400


def test_events_delivered_are_what_was_asked_for_among_what_is_supported():
    asked = stream(events_requested=[SESSION_REVOKED, "urn:example:unknown"])
    assert asked.events_delivered(SUPPORTED) == SUPPORTED
    assert stream(events_requested=["urn:example:unknown"]).events_delivered(SUPPORTED) == []
    assert stream(description="x" * 1000).description == "x" * 256


def test_update_changes_what_is_sent_and_replace_removes_what_is_not():
    old = stream(description="broker A", events_requested=[SESSION_REVOKED])
    patched = update_stream(old, {"stream_id": "s1", "description": "A"}, issuer=ISSUER,
                            supported=SUPPORTED)
    assert (patched.description, patched.events_requested) == ("A", [SESSION_REVOKED])
    replaced = replace_stream(old, {"stream_id": "s1", "description": "A"}, issuer=ISSUER,
                              supported=SUPPORTED)
    assert (replaced.description, replaced.events_requested) == ("A", None)
    same_iss = update_stream(old, {"stream_id": "s1", "iss": ISSUER}, issuer=ISSUER,
                             supported=SUPPORTED)
    assert same_iss == old
    for field, value in (("iss", "https://rogue"), ("aud", "urn:other"),
                         ("events_delivered", [])):
        with pytest.raises(StreamError, match=f"`{field}`") as error:
            update_stream(old, {"stream_id": "s1", field: value}, issuer=ISSUER,
                          supported=SUPPORTED)
        assert error.value.status == 400


def test_a_stream_is_stored_as_json_and_read_back_whole():
    pushed = stream(delivery={"method": PUSH, "endpoint_url": "https://rx.acme.org/events",
                              "authorization_header": "Bearer x"})
    pushed.cursor = {"intentwatch.revocations.v1:0": 7}
    data = encode_stream(pushed)
    assert json.loads(data)["cursor"] == {"intentwatch.revocations.v1:0": 7}
    assert decode_stream(data) == pushed


# -- outbox -------------------------------------------------------------------------------


def test_the_outbox_keeps_order_and_its_cursor_waits_for_the_oldest_unacknowledged():
    box = Outbox({"rev:0": 0, "rev:1": 0})
    assert box.offer("rev:0", 0, "a", "ta")
    assert box.offer("rev:1", 0, "b", "tb")
    box.skip("rev:0", 1)  # a record this stream does not get
    assert box.offer("rev:0", 2, "c", "tc")
    box.add("v", "tv")
    assert [entry.jti for entry in box.take(10, now=0.0)] == ["a", "b", "c", "v"]
    assert box.cursor() == {"rev:0": 0, "rev:1": 0}
    assert box.ack(["b", "c", "unknown"]) == 2
    assert box.cursor() == {"rev:0": 0, "rev:1": 1}
    box.ack(["a"])
    assert box.cursor() == {"rev:0": 3, "rev:1": 1}
    assert not box.offer("rev:0", 2, "c", "tc"), "a record read again is not queued again"


def test_a_set_sent_but_not_acknowledged_is_offered_again_later():
    box = Outbox({})
    box.offer("rev:0", 0, "a", "ta")
    assert [e.jti for e in box.take(10, now=100.0, redeliver_after=30)] == ["a"]
    assert box.take(10, now=110.0, redeliver_after=30) == []
    assert not box.ready(now=110.0, redeliver_after=30)
    assert [e.jti for e in box.take(10, now=131.0, redeliver_after=30)] == ["a"]


def test_max_events_and_duplicate_revocations():
    box = Outbox({})
    for offset in range(5):
        box.offer("rev:0", offset, f"j{offset}", "t")
    assert not box.offer("rev:0", 5, "j1", "t"), "the same jti published again"
    assert [e.jti for e in box.take(2, now=0.0)] == ["j0", "j1"]
    assert [e.jti for e in box.take(2, now=0.0)] == ["j2", "j3"]
    assert box.head().jti == "j0"


def test_a_full_outbox_drops_the_oldest_and_says_so():
    box = Outbox({}, limit=2)
    for offset in range(3):
        box.offer("rev:0", offset, f"j{offset}", "t")
    assert [e.jti for e in box.take(10, now=0.0)] == ["j1", "j2"]
    assert box.dropped == 1
    assert box.cursor() == {"rev:0": 1}


async def test_waiting_ends_when_something_is_queued():
    box = Outbox({})
    waiting = asyncio.create_task(box.wait(10.0))
    await asyncio.sleep(0)
    box.offer("rev:0", 0, "a", "t")
    await asyncio.wait_for(waiting, 1.0)


# -- receivers ----------------------------------------------------------------------------


def test_receivers_authenticate_by_bearer_token_and_the_file_must_be_private(tmp_path):
    path = tmp_path / "receivers.json"
    digest = hashlib.sha256(b"gateway-token").hexdigest()
    path.write_text(json.dumps({"receivers": [
        {"name": "broker-a", "token": "broker-token", "audience": "https://broker-a.acme.org"},
        {"name": "gateway", "token_sha256": digest, "alg": "ES256"},
    ]}))
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_receivers(path)
    os.chmod(path, 0o600)
    receivers = load_receivers(path)
    broker = receivers.authenticate("Bearer broker-token")
    assert (broker.name, broker.audience, broker.alg) == (
        "broker-a", "https://broker-a.acme.org", "RS256")
    gateway = receivers.authenticate("bearer gateway-token")
    assert (gateway.name, gateway.audience, gateway.alg) == ("gateway", "gateway", "ES256")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic broker-token", "broker-token"):
        assert receivers.authenticate(header) is None
    assert "broker-token" not in repr(broker)


# -- the transmitter's own SETs -----------------------------------------------------------


def test_discovery_metadata_names_every_endpoint_and_both_delivery_methods():
    meta = metadata(ISSUER)
    assert meta["spec_version"] == "1_0" and meta["issuer"] == ISSUER
    assert meta["delivery_methods_supported"] == [PUSH, POLL]
    for endpoint in ("jwks_uri", "configuration_endpoint", "status_endpoint",
                     "verification_endpoint"):
        assert meta[endpoint].startswith(ISSUER + "/")
    assert all("spec_urn" in scheme for scheme in meta["authorization_schemes"])


def set_claims(claims, key) -> dict:
    header, payload, _ = forge.segments(sign_set(claims, key))
    assert header == {"alg": key.alg, "kid": key.kid, "typ": "secevent+jwt"}
    decoded = json.loads(payload)
    assert "sub" not in decoded and "exp" not in decoded          # SSF: neither claim
    assert len(decoded["events"]) == 1                             # one event per SET
    assert isinstance(decoded["iat"], int) and decoded["jti"] and decoded["iss"] == ISSUER
    return decoded


def test_a_verification_set_names_the_stream_and_echoes_the_state():
    key = generate_key("RS256")
    claims = set_claims(verification_claims("s1", "st-1", issuer=ISSUER, audience="urn:a",
                                            jti="j1", issued_at=1793606400.9), key)
    assert claims["sub_id"] == {"format": "opaque", "id": "s1"}   # SSF: the stream, opaque
    assert claims["events"] == {VERIFICATION: {"state": "st-1"}}
    assert claims["aud"] == "urn:a" and claims["iat"] == 1793606400
    unstated = verification_claims("s1", None, issuer=ISSUER, audience="urn:a", jti="j2",
                                   issued_at=0)
    assert unstated["events"] == {VERIFICATION: {}}


def test_an_alert_verdict_becomes_a_caep_risk_level_change():
    verdict = Verdict(event_id="e7", agent_id="spiffe://acme.org/agents/support/a1",
                      task_id="t1", tool="crm.export", ts="2026-11-02T08:00:00.250Z",
                      score=0.71, decision="alert",
                      reasons=[Reason(code="volume", weight=0.4, detail="three times the usual")])
    key = generate_key("ES256")
    claims = set_claims(risk_level_change_claims(verdict, issuer=ISSUER, audience="urn:a",
                                                 issued_at=1793606401), key)
    event = claims["events"][RISK_LEVEL_CHANGE]
    assert event["principal"] == "SESSION"                         # CAEP: required
    assert event["current_level"] in ("LOW", "MEDIUM", "HIGH")     # CAEP: required, enumerated
    assert event["current_level"] == "MEDIUM"
    assert event["risk_reason"] == "volume"
    assert event["event_timestamp"] == 1793606400
    assert claims["sub_id"]["session"] == {"format": "opaque", "id": "t1"}
    again = risk_level_change_claims(verdict, issuer=ISSUER, audience="urn:b", issued_at=5)
    assert again["jti"] == claims["jti"] and claims["txn"] == "e7"
    with pytest.raises(ValueError, match="alert"):
        risk_level_change_claims(msgspec.structs.replace(verdict, decision="allow"),
                                 issuer=ISSUER, audience="urn:a", issued_at=0)


# -- the transmitter's distribution, without Kafka ----------------------------------------


def transmitter_with_a_stream(tmp_path, alg: str = "RS256", **settings):
    """A transmitter (never started) with one poll stream of receiver ``broker-a``, and the
    worker key its revocations are checked against."""
    from intentwatch.ssf.receivers import Receiver, Receivers
    from intentwatch.ssf.settings import SsfSettings
    from intentwatch.ssf.transmitter import Transmitter, load_keyring
    from intentwatch.tokens.revocations import RevocationVerifier

    worker_key = generate_key("ES256")
    worker_jwks = tmp_path / "worker-jwks.json"
    worker_jwks.write_text(json.dumps({"keys": [worker_key.public_jwk()]}))
    receiver = Receiver("broker-a", hashlib.sha256(b"t").digest(), "urn:broker-a", alg)
    transmitter = Transmitter(SsfSettings(receivers_file=tmp_path / "r.json", issuer=ISSUER,
                                          upstream_jwks=str(worker_jwks), **settings),
                              Receivers([receiver]), load_keyring(tmp_path / "ssf-keys"))
    transmitter._verifier = RevocationVerifier(worker_jwks, issuer="urn:intentwatch")
    polled = stream()
    transmitter.streams[polled.stream_id] = polled
    transmitter.outboxes[polled.stream_id] = Outbox({})
    return transmitter, transmitter.outboxes[polled.stream_id], worker_key


async def test_a_revocation_is_verified_and_reissued_for_the_stream(tmp_path):
    from intentwatch.contracts import Revocation
    from intentwatch.tokens.revocations import encode_revocation

    transmitter, outbox, worker_key = transmitter_with_a_stream(tmp_path)
    rev = Revocation(revocation_id="r1", agent_id="spiffe://acme.org/agents/a1", task_id="t1",
                     credential_ids=["c1"], reason_code="intent_violation", reason="outside",
                     score=1.0, event_ts=1793606400.0)
    token = encode_revocation(rev, worker_key, issuer="urn:intentwatch",
                              audience="urn:intentwatch:credential-brokers", issued_at=0).token
    forged = encode_revocation(rev, generate_key("ES256"), issuer="urn:intentwatch",
                               audience="x", issued_at=0).token
    await transmitter._distribute("rev:0", "intentwatch.revocations.v1", 0, forged.encode())
    await transmitter._distribute("rev:0", "intentwatch.revocations.v1", 1, token.encode())
    (entry,) = outbox.take(10, now=0.0)
    header, payload, _ = forge.segments(entry.token)
    claims = json.loads(payload)
    assert (entry.jti, claims["jti"], claims["txn"]) == ("r1", "r1", "r1")
    assert (claims["iss"], claims["aud"]) == (ISSUER, "urn:broker-a"), "re-addressed"
    assert header["alg"] == "RS256" and header["kid"] == transmitter.keyring.for_alg("RS256").kid
    assert transmitter.counts["rejected"] == 1
    assert outbox.cursor() == {"rev:0": 1}, "the forged record is passed, the good one held"


async def test_alert_verdicts_become_risk_events_only_when_asked_for(tmp_path):
    transmitter, outbox, _ = transmitter_with_a_stream(tmp_path, alg="ES256", risk_events=True)
    assert transmitter.supported == [SESSION_REVOKED, RISK_LEVEL_CHANGE]
    for offset, decision in enumerate(("allow", "alert", "revoke")):
        verdict = Verdict(event_id=f"e{offset}", agent_id="spiffe://acme.org/agents/a1",
                          task_id="t1", tool="crm.export", ts="2026-11-02T08:00:00Z",
                          score=0.7, decision=decision)
        await transmitter._distribute("verdicts:0", "intentwatch.verdicts.v1", offset,
                                      msgspec.json.encode(verdict))
    (entry,) = outbox.take(10, now=0.0)
    header, payload, _ = forge.segments(entry.token)
    assert header["alg"] == "ES256"
    assert json.loads(payload)["txn"] == "e1"
    transmitter.streams["s1"].events_requested = [SESSION_REVOKED]
    await transmitter._distribute("verdicts:0", "intentwatch.verdicts.v1", 3, msgspec.json.encode(
        Verdict(event_id="e3", agent_id="spiffe://acme.org/agents/a1", task_id="t1", tool="x",
                ts="2026-11-02T08:00:00Z", score=0.7, decision="alert")))
    assert len(outbox) == 1 and outbox.cursor() == {"verdicts:0": 1}
