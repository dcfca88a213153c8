import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from intentwatch.contracts import (
    ContractError,
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
