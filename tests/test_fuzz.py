"""Fuzzing the decoder and the engine with random and mutated records (issue 10, point 7).

Every record must end as a verdict (a tool call, once its grant came or its grace
passed) or a dead letter (a :class:`~intentwatch.contracts.ContractError`); nothing else
may escape, and everything the engine produces must be publishable (encodes, signs, and
stays far below the broker's 1 MB limit). Examples are derandomized, so a run is
repeatable; a failure prints the records that caused it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentwatch.contracts import ContractError, RecordRejected, ToolCall, encode
from intentwatch.models.admission import check_time
from intentwatch.models.engine import Engine
from intentwatch.pipeline.decoding import Decoder
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import generate_key
from intentwatch.tokens.revocations import encode_revocation

AGENT = "spiffe://acme.org/agents/support/fuzz"
NOW = 1_793_606_400.0
KEY = generate_key("ES256")

TEMPLATES: dict[str, dict[str, Any]] = {
    "toolcall": {"event_id": "e1", "ts": NOW, "agent_id": AGENT, "task_id": "t1",
                 "tool": "crm.lookup_customer", "credential_id": "c1", "target": "crm://c-1",
                 "action": "read", "args": {"customer_id": "c-1"}, "data_labels": ["internal"],
                 "bytes_out": 10, "outcome": "ok"},
    "grant": {"grant_id": "g1", "agent_id": AGENT, "task_id": "t1", "credential_ids": ["c1"],
              "intent": "look up customer c-1", "tools": ["crm.*"], "targets": ["crm://*"],
              "data_labels": ["internal"], "issued_at": NOW - 10, "expires_at": NOW + 900,
              "issuer": "https://broker.acme.org"},
    "task": {"event_id": "s1", "ts": NOW, "agent_id": AGENT, "task_id": "t1",
             "status": "completed"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["", "*", AGENT, AGENT + "\n", "t1", "c1"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=20,
)
times = st.floats(min_value=-1e12, max_value=1e13, allow_nan=False) | st.sampled_from(
    [NOW, NOW + 1, NOW + 299, NOW + 301, NOW + 86400 * 365, 253402300799, 253402300800, -1,
     "2026-11-02T08:00:00Z", "10000-01-01T00:00:00Z", "2026-11-02T08:00:00"]
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes | None]:
    """A record of one kind: its template with fields replaced, dropped or added."""
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    record = dict(TEMPLATES[kind])
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4, unique=True)):
        change = draw(st.sampled_from(["value", "time", "drop", "big"]))
        if change == "drop":
            record.pop(name)
        elif change == "time":
            record[name] = draw(times)
        elif change == "big":
            record[name] = draw(st.sampled_from(["x" * 70_000, ["l"] * 40_000, {"a": [[[]]]}]))
        else:
            record[name] = draw(json_values)
    for name in ("event_id", "task_id", "grant_id"):
        if name in record and draw(st.booleans()):
            record[name] = draw(st.sampled_from(["t1", "t2", "e1", "e2", "g1", "g2"]))
    data = json.dumps(record).encode()
    shape = draw(st.sampled_from(["json", "json", "json", "bytes", "cut", "none"]))
    if shape == "bytes":
        return kind, draw(st.binary(max_size=200))
    if shape == "cut":
        return kind, data[: draw(st.integers(0, len(data)))]
    if shape == "none":
        return kind, None
    return kind, data


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(mutated(), min_size=1, max_size=12))
def test_every_record_is_a_verdict_or_a_dead_letter_and_nothing_escapes(
    records: list[tuple[str, bytes | None]],
) -> None:
    decoder = Decoder(GrantVerifier(None, allow_unsigned=True))
    engine = Engine()
    calls, outputs = 0, []
    stream_time = NOW
    for kind, value in records:
        try:
            if value is None:  # as the worker does
                raise RecordRejected("malformed", "record has no value")
            event = decoder.decode(kind, AGENT.encode(), value, stream_time)
            check_time(event, stream_time, engine.config.max_ahead_seconds)  # as the worker
            outputs.append(engine.process(event, now=stream_time))
        except ContractError:  # a dead letter
            continue
        calls += isinstance(event, ToolCall)
        stream_time += 1.0
    for extra in (stream_time + 10.0, stream_time + 86400.0 * 3):
        outputs.append(engine.tick(extra))

    verdicts = [v for outcome in outputs for v in outcome.verdicts]
    assert len(verdicts) == calls  # every call that was not a dead letter has its verdict
    for outcome in outputs:
        for record in [*outcome.verdicts, *outcome.audits]:
            assert len(encode(record)) < 256 * 1024
        for revocation in outcome.revocations:
            signed = encode_revocation(revocation, KEY, issuer="urn:iw", audience="urn:b",
                                       issued_at=NOW)
            assert len(signed.token) < 64 * 1024
