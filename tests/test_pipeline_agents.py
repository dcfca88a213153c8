"""The faust agents with ``agent.test_context()``: decode → engine → publish, no Kafka.

Published records are captured by the pipeline's ``send`` hook; tables use the memory store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from faust.serializers import codecs
from faust.types import TP
from kafka.partitioner.default import murmur2

from intentwatch.contracts import TOPICS, DeadLetterHeaders, Grant, encode, role_of
from intentwatch.pipeline.app import TABLES, Pipeline, agent_partition, table_store_options
from intentwatch.pipeline.worker import load_keyring
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import Keyring, unverified_payload
from intentwatch.tokens.revocations import RevocationVerifier
from tests.pipeline_harness import (
    ISSUER_KEY,
    OTHER_KEY,
    Sent,
    agent_id,
    call,
    grant_token,
    make_pipeline,
    put,
)


async def test_conforming_call_gets_an_allow_verdict(pipeline: Pipeline, sent: Sent) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        await put(events, "toolcall", call(agent), agent)

    [verdict] = sent.verdicts()
    assert (verdict["agent_id"], verdict["decision"]) == (agent, "allow")
    assert "semconv_version" not in verdict  # only calls read from spans name conventions
    assert sent.on("revocations") == [] and sent.on("dlq") == []
    assert set(pipeline.grants[agent]) == {"t1"}


async def test_violation_publishes_a_signed_revocation(pipeline: Pipeline, sent: Sent) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        await put(events, "toolcall", call(agent, tool="iam.update_user_password"), agent)

    assert [v["decision"] for v in sent.verdicts()] == ["revoke"]
    [(key, token, headers)] = sent.on("revocations")
    revocation = RevocationVerifier(pipeline.keyring.jwks()).verify(token)
    assert (key, revocation.reason_code) == (agent.encode(), "intent_violation")
    assert headers["ce_id"] == revocation.revocation_id.encode()
    assert headers["content-type"] == b"application/secevent+jwt"


async def test_malformed_call_goes_to_the_dlq_and_the_next_is_processed(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        bad = await put(events, "toolcall", b'{"event_id": "e1", "ts": ', agent)
        await put(events, "toolcall", call(agent), agent)

    [(key, value, headers)] = sent.on("dlq")
    assert (key, value) == (agent.encode(), b'{"event_id": "e1", "ts": ')
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == TOPICS["events"].encode()
    assert headers[DeadLetterHeaders.SOURCE_PARTITION] == str(agent_partition(agent, 4)).encode()
    assert headers[DeadLetterHeaders.SOURCE_OFFSET] == str(bad.message.offset).encode()
    assert headers[DeadLetterHeaders.ERROR_CLASS] == b"ContractError"
    assert b"not valid JSON" in headers[DeadLetterHeaders.ERROR_MESSAGE]
    assert [v["decision"] for v in sent.verdicts()] == ["allow"]
    assert pipeline.status()["published"]["dlq.ContractError"] == 1


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda agent: grant_token(agent, key=OTHER_KEY), b"unknown_kid"),
        (lambda agent: grant_token(agent, ttl=-3600), b"expired"),
        (lambda agent: grant_token(agent_id()), b"agent_mismatch"),
        (lambda agent: encode({"grant_id": "g"}), b"unsigned"),
    ],
    ids=["unknown_kid", "expired", "agent_mismatch", "unsigned"],
)
async def test_rejected_grant_goes_to_the_dlq_with_its_code(
    pipeline: Pipeline, sent: Sent, make: Any, code: bytes
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", make(agent), agent)
        await put(events, "grant", grant_token(agent, "t2"), agent)

    [(_, _, headers)] = sent.on("dlq")
    assert headers[DeadLetterHeaders.ERROR_CLASS] == code
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == TOPICS["events"].encode()
    assert set(pipeline.grants[agent]) == {"t2"}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda agent: grant_token(agent, key=OTHER_KEY), "unknown_kid"),
        (lambda agent: grant_token(agent, ttl=-3600), "expired"),
        (lambda agent: unverified_payload(grant_token(agent)), "unsigned"),  # its plain payload
    ],
    ids=["unknown_kid", "expired", "unsigned"],
)
async def test_a_call_whose_grant_was_rejected_names_why(
    pipeline: Pipeline, sent: Sent, make: Any, code: str
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "tick", b"", agent, key=None, timestamp=time.time())
        await put(events, "grant", make(agent), agent)
        await put(events, "toolcall", call(agent), agent)
        # then stream time passes the call's grace period
        await put(events, "tick", b"", agent, key=None, timestamp=time.time() + 10.0)

    [verdict] = sent.verdicts()
    assert verdict["decision"] == "revoke"
    assert verdict["reasons"][0]["code"] == "grant_rejected"
    assert verdict["reasons"][0]["detail"].startswith(f"grant rejected: {code}: ")
    assert "no grant" not in verdict["reasons"][0]["detail"]


async def test_call_under_another_agents_key_is_a_dead_letter(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "toolcall", call(agent), agent, key=agent_id().encode())

    [(_, _, headers)] = sent.on("dlq")
    assert headers[DeadLetterHeaders.ERROR_CLASS] == b"agent_mismatch"


async def test_malformed_task_event_is_a_dead_letter(pipeline: Pipeline, sent: Sent) -> None:
    agent = agent_id()
    event = encode({"event_id": "e", "ts": time.time(), "agent_id": agent, "task_id": "t1",
                    "status": "paused"})
    async with pipeline.agent.test_context() as events:
        await put(events, "task", event, agent)

    [(_, value, headers)] = sent.on("dlq")
    assert value == event
    assert headers[DeadLetterHeaders.SOURCE_TOPIC] == TOPICS["events"].encode()
    assert b"status" in headers[DeadLetterHeaders.ERROR_MESSAGE]


async def test_parked_call_is_judged_when_its_grant_arrives(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    grant = grant_token(agent)  # issued before the call, published after it
    async with pipeline.agent.test_context() as events:
        await put(events, "toolcall", call(agent), agent)
        assert sent.verdicts() == []
        await put(events, "grant", grant, agent)

    assert [v["decision"] for v in sent.verdicts()] == ["allow"]


async def test_a_tick_record_past_the_expiry_revokes_the_grant(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "tick", b"", agent, key=None, timestamp=time.time())
        await put(events, "grant", grant_token(agent, ttl=5.0), agent)
        assert sent.on("revocations") == []
        await put(events, "tick", b"", agent, key=None, timestamp=time.time() + 10.0)

    [(_, token, _)] = sent.on("revocations")
    revocation = RevocationVerifier(pipeline.keyring.jwks()).verify(token)
    assert (revocation.agent_id, revocation.reason_code) == (agent, "ttl_expired")
    assert [msgspec.json.decode(v)["ended"] for _, v, _ in sent.on("audit")] == ["expired"]


async def test_a_tick_moves_only_its_own_partitions_time(pipeline: Pipeline, sent: Sent) -> None:
    agent = agent_id()
    other = (agent_partition(agent, 4) + 1) % 4
    async with pipeline.agent.test_context() as events:
        for partition in (agent_partition(agent, 4), other):
            await put(events, "tick", b"", agent, key=None, partition=partition,
                      timestamp=time.time())
        await put(events, "grant", grant_token(agent, ttl=5.0), agent)
        await put(events, "tick", b"", agent, key=None, partition=other,
                  timestamp=time.time() + 10.0)

    assert sent.on("revocations") == []


async def test_table_writes_wait_for_a_flush_and_records_for_theirs(
    tmp_path: Path, sent: Sent
) -> None:
    pipeline = make_pipeline(tmp_path, sent, flush_records=3)
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        read = [await put(events, "grant", grant_token(agent), agent),
                await put(events, "toolcall", call(agent), agent)]
        assert agent not in pipeline.grants and sent.verdicts()  # judged, not yet written
        assert not any(event.message.acked for event in read)  # so not committable
        read.append(await put(events, "toolcall", call(agent), agent))  # the third: a flush
        assert set(pipeline.grants[agent]) == {"t1"}
        assert all(event.message.acked for event in read)
        [task] = [key for key in pipeline.open if key.startswith(agent)]
        assert len(pipeline.open[task].staged) == 2  # each key written once, as it ended up

        late = await put(events, "grant", grant_token(agent, "t2"), agent)
        await put(events, "tick", b"", agent, key=None, partition=agent_partition(agent, 4),
                  timestamp=time.time())  # a tick flushes too
        assert set(pipeline.grants[agent]) == {"t1", "t2"} and late.message.acked


async def test_a_rebalance_drops_what_was_not_flushed(tmp_path: Path, sent: Sent) -> None:
    pipeline = make_pipeline(tmp_path, sent, flush_records=100)
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        # the records since the last flush will be read again from the committed offset:
        await pipeline.app.on_partitions_assigned.send(assigned={
            TP(TOPICS["events"], partition) for partition in range(4)})
        await put(events, "toolcall", call(agent), agent)  # so its grant is not known yet

    assert agent not in pipeline.grants
    assert [v["decision"] for v in sent.verdicts()] == []  # parked until its grant comes


async def test_a_record_of_unknown_kind_is_a_dead_letter(pipeline: Pipeline, sent: Sent) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        await put(events, "heartbeat", call(agent), agent)

    [(_, _, headers)] = sent.on("dlq")
    assert headers[DeadLetterHeaders.ERROR_CLASS] == b"unknown_kind"


async def test_records_without_a_kind_header_are_told_apart_by_their_value(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent = agent_id()
    async with pipeline.agent.test_context() as events:
        options = {"key": agent.encode(), "partition": agent_partition(agent, 4)}
        await events.put(grant_token(agent), **options)
        await events.put(call(agent), **options)
        await events.put(encode({"event_id": "done", "ts": time.time(), "agent_id": agent,
                                 "task_id": "t1", "status": "completed"}), **options)

    assert [v["decision"] for v in sent.verdicts()] == ["allow"]
    assert len(sent.on("audit")) == 1 and sent.on("dlq") == []


def test_grants_table_values_round_trip() -> None:
    grants = {"t1": Grant(
        grant_id="g1", agent_id="spiffe://acme.org/agents/a1", task_id="t1",
        credential_ids=["c1"], tools=["crm.*"], targets=["crm://*"], data_labels=["internal"],
        issued_at=1.0, expires_at=2.0, issuer="broker",
    )}
    data = codecs.dumps("intentwatch-grants", grants)
    assert codecs.loads("intentwatch-grants", data) == grants


def test_agent_partition_is_the_sdk_producers_partition() -> None:
    for agent in (agent_id() for _ in range(50)):  # kafka-python's DefaultPartitioner rule
        assert agent_partition(agent, 6) == (murmur2(agent.encode()) & 0x7FFFFFFF) % 6


def test_keyring_is_created_on_first_start_only(tmp_path: Path) -> None:
    first = load_keyring(tmp_path / "keys")
    assert load_keyring(tmp_path / "keys").active.kid == first.active.kid
    assert len(Keyring.load(tmp_path / "keys").keys) == 1


async def test_what_was_learned_is_in_the_learned_table_and_taken_back_from_it(
    pipeline: Pipeline, sent: Sent
) -> None:
    agent, newcomer = agent_id(), agent_id()
    done = encode({"event_id": "done", "ts": time.time(), "agent_id": agent, "task_id": "t1",
                   "status": "completed"})
    probe = call(agent, "t2", target="crm://c-43")
    async with pipeline.agent.test_context() as events:
        await put(events, "grant", grant_token(agent), agent)
        for _ in range(3):
            await put(events, "toolcall", call(agent), agent)
        await put(events, "task", done, agent)
        assert pipeline.status()["learned"]["learned_calls"] == 3
        kept = dict(pipeline.learned.items())  # bytes, as the changelog holds them
        await put(events, "grant", grant_token(agent, "t2"), agent)
        await put(events, "toolcall", probe, agent)
    partition = agent_partition(agent, 4)
    assert set(kept) == {agent, f"partition-{partition}/population",
                         f"partition-{partition}/role/{role_of(agent)}"} and newcomer not in kept

    def restarted(learned: dict[str, bytes]) -> tuple[Pipeline, Sent]:
        settings, out = pipeline.settings, Sent()
        again = Pipeline(settings, keyring=load_keyring(settings.keys_dir),
                         grant_verifier=GrantVerifier({"keys": [ISSUER_KEY.public_jwk()]}),
                         send=out)
        again.learned.data.update(learned)  # what recovery reads from the changelog
        return again, out

    again, out = restarted(kept)
    async with again.agent.test_context() as events:
        await put(events, "grant", grant_token(agent, "t2"), agent)
        await put(events, "toolcall", probe, agent)
    learned = again.status()["learned"]
    assert (learned["restored_agents"], learned["restored_calls"]) == (1, 3)
    assert learned["warm_from"] is None  # its own state, not a warm start
    assert learned["history"]["fleet_calls"] == 3.0 and learned["history"]["agents"] == 1
    assert out.verdicts()[0]["components"] == sent.verdicts()[-1]["components"]

    # state of another version is no reason not to start: the agent starts afresh
    other = msgspec.msgpack.encode({**msgspec.msgpack.decode(kept[agent]), "version": 99})
    again, out = restarted({agent: other})
    async with again.agent.test_context() as events:
        await put(events, "grant", grant_token(agent, "t2"), agent)
        await put(events, "toolcall", probe, agent)
    assert again.status()["learned"]["restored_agents"] == 0
    assert out.verdicts()[0]["components"] != sent.verdicts()[-1]["components"]  # cold


def test_every_table_bounds_the_memory_rocksdb_may_take(pipeline: Pipeline) -> None:
    """faust's defaults (a 2 GiB block cache per table and partition) are not kept."""
    for name in TABLES:
        options = getattr(pipeline, name).options
        assert options == table_store_options(name)
        assert options["block_cache_size"] <= 64 * 2**20
