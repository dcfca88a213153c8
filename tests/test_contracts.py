import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from intentwatch.contracts import (
    LIMITS,
    ContractError,
    RecordRejected,
    decode_grant_payload,
    decode_replay_record,
    decode_task_event,
    decode_toolcall,
    encode,
    format_ts,
    role_of,
)
from intentwatch.schemas import SCHEMA_FILES, json_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
AGENT = "spiffe://acme.org/agents/support/agent-3"


def toolcall(**changes) -> bytes:
    record = {"event_id": "e1", "ts": "2026-11-02T09:00:00Z", "agent_id": AGENT,
              "task_id": "t1", "tool": "crm.lookup_customer"}
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_files_match_the_structs(name):
    committed = json.loads((SCHEMAS / name).read_text())
    assert committed == json_schema(SCHEMA_FILES[name]), "run scripts/generate_schemas.py"


@pytest.mark.parametrize("name", sorted(set(SCHEMA_FILES) - {"revocation.v1.json"}))
def test_examples_validate_against_schema_and_decode(name):
    example = json.loads((SCHEMAS / "examples" / name.replace(".v1", "")).read_text())
    jsonschema.validate(example, json.loads((SCHEMAS / name).read_text()))
    msgspec.convert(example, SCHEMA_FILES[name])


def test_timestamps_accept_rfc3339_and_epoch_and_normalise_to_epoch():
    assert decode_toolcall(toolcall(ts="2026-11-02T10:00:00+01:00")).ts == 1793610000.0
    assert decode_toolcall(toolcall(ts=1793610000)).ts == 1793610000.0
    assert format_ts(1793610000.25) == "2026-11-02T09:00:00.250Z"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ts": "2026-11-02T09:00:00"}, "timezone"),
        ({"ts": ...}, "missing required field `ts`"),
        ({"tool": ...}, "missing required field `tool`"),
        ({"tool": 7}, "Expected `str`, got `int` - at `$.tool`"),
        ({"tool": ""}, "$.tool"),
        ({"agent_id": "agent-3"}, "`agent_id` must be a SPIFFE ID"),
        ({"agent_id": "spiffe://acme.org"}, "`agent_id` must be a SPIFFE ID"),
        ({"agent_id": "spiffe://acme.org/a/../b"}, "`agent_id` must be a SPIFFE ID"),
        ({"action": "steal"}, "$.action"),
        ({"bytes_out": -5}, "$.bytes_out"),
        ({"data_labels": "pii"}, "$.data_labels"),
        ({"outcome": "maybe"}, "$.outcome"),
    ],
)
def test_bad_tool_calls_name_the_field_and_problem(changes, message):
    with pytest.raises(ContractError, match="tool call") as error:
        decode_toolcall(toolcall(**changes))
    assert message in str(error.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"null"])
def test_garbage_is_a_contract_error(raw):
    with pytest.raises(ContractError):
        decode_toolcall(raw)


def test_unknown_fields_are_ignored():
    assert decode_toolcall(toolcall(vendor_extension={"x": 1})).tool == "crm.lookup_customer"


def test_grant_must_expire_after_issue():
    payload = json.loads((SCHEMAS / "examples" / "grant.json").read_text())
    assert decode_grant_payload(payload).expires_at > decode_grant_payload(payload).issued_at
    payload["expires_at"] = payload["issued_at"]
    with pytest.raises(ContractError, match="expires_at"):
        decode_grant_payload(payload)


def test_task_status_is_checked():
    with pytest.raises(ContractError, match=r"\$.status"):
        decode_task_event(json.dumps({"event_id": "x", "ts": 1, "agent_id": AGENT,
                                      "task_id": "t", "status": "paused"}))


def test_replay_records_dispatch_on_kind():
    record = json.loads(toolcall())
    assert decode_replay_record({"kind": "toolcall", **record}).tool == "crm.lookup_customer"
    with pytest.raises(ContractError, match="`kind`"):
        decode_replay_record({"kind": "span", **record})


def test_encode_round_trips():
    call = decode_toolcall(toolcall(data_labels=["pii"]))
    assert decode_toolcall(encode(call)) == call


def test_role_is_spiffe_id_without_last_segment():
    assert role_of(AGENT) == "spiffe://acme.org/agents/support"


@pytest.mark.parametrize(
    "agent_id",
    [
        "spiffe://acme.org/agents/a1\n",  # re's `$` matches before a final newline
        "spiffe://acme.org/agents/a1/",
        "spiffe://acme.org//a1",
        "spiffe://acme.org/./a1",
        "spiffe://acme.org/agents/..",
        "spiffe://Acme.org/a1",
        "SPIFFE://acme.org/a1",
        "spiffe://acme.org:443/a1",
        "spiffe://user@acme.org/a1",
        "spiffe://acme.org/a1?x=1",
        "spiffe://acme.org/a1#x",
        "spiffe://acme.org/a%201",
        "spiffe://acme.org/agents/ä",
        "spiffe://" + "a" * 256 + "/a1",
        "spiffe://acme.org/" + "a" * 2048,
    ],
)
def test_spiffe_ids_are_checked_exactly_as_the_specification_says(agent_id):
    with pytest.raises(ContractError, match="agent_id"):
        decode_toolcall(toolcall(agent_id=agent_id))


@pytest.mark.parametrize(
    "agent_id", ["spiffe://acme.org/agents/...", "spiffe://a-b_c.d/A.b-C_9", "spiffe://x/y"]
)
def test_spiffe_ids_the_specification_allows_are_accepted(agent_id):
    assert decode_toolcall(toolcall(agent_id=agent_id)).agent_id == agent_id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"data_labels": [f"l{i}" for i in range(33)]}, "$.data_labels"),
        ({"data_labels": ["x" * 65]}, "$.data_labels[0]"),
        ({"data_labels": [""]}, "$.data_labels[0]"),
        ({"args": {f"a{i}": i for i in range(65)}}, "$.args"),
        ({"target": "x" * 4097}, "$.target"),
        ({"tool_description": "x" * 4097}, "$.tool_description"),
        ({"tool": "x" * 1025}, "$.tool"),
        ({"credential_id": "x" * 1025}, "$.credential_id"),
        ({"trace_id": "a" * 65}, "$.trace_id"),
        ({"ts": 253402300800}, "$.ts"),
        ({"ts": -1}, "$.ts"),
        ({"ts": "0001-01-01T00:00:00Z"}, "between 1970 and 9999"),
    ],
)
def test_tool_call_caps_reject_with_the_field(changes, field):
    with pytest.raises(ContractError, match="tool call") as error:
        decode_toolcall(toolcall(**changes))
    assert field in str(error.value)


def test_a_record_past_the_byte_cap_is_rejected_as_too_large():
    big = toolcall(args={"body": "x" * LIMITS.RECORD_BYTES})
    with pytest.raises(RecordRejected) as error:
        decode_toolcall(big)
    assert error.value.code == "too_large" and f"{len(big):,} bytes" in str(error.value)


def test_deep_nesting_and_huge_numbers_are_contract_errors_not_crashes():
    deep = toolcall()[:-1] + b', "args": {"x": ' + b"[" * 20000 + b"]" * 20000 + b"}}"
    with pytest.raises(ContractError, match="nested too deeply"):
        decode_toolcall(deep)
    with pytest.raises(ContractError, match="out of range"):
        decode_toolcall(toolcall().replace(b'"2026-11-02T09:00:00Z"', b"1e400"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("credential_ids", [f"c{i}" for i in range(65)]),
        ("tools", [f"t{i}" for i in range(257)]),
        ("targets", [f"t{i}" for i in range(257)]),
        ("data_labels", [f"l{i}" for i in range(257)]),
        ("intent", "x" * (16 * 1024 + 1)),
        ("expires_at", 253402300800),
    ],
)
def test_grant_caps_reject_with_the_field(field, value):
    payload = json.loads((SCHEMAS / "examples" / "grant.json").read_text())
    with pytest.raises(ContractError, match=rf"\$\.{field}"):
        decode_grant_payload({**payload, field: value})
