"""JSON Schema files of the v1 contracts, generated from the structs.

``scripts/generate_schemas.py`` writes them under ``schemas/``; a test fails
while a committed file differs from what the structs say.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from intentwatch.contracts import AuditRecord, Grant, TaskEvent, ToolCall, Verdict
from intentwatch.tokens.revocations import RevocationClaims

__all__ = ["SCHEMA_FILES", "json_schema"]

SCHEMA_FILES: dict[str, type[Struct]] = {
    "toolcall.v1.json": ToolCall,
    "grant.v1.json": Grant,
    "task.v1.json": TaskEvent,
    "verdict.v1.json": Verdict,
    "revocation.v1.json": RevocationClaims,
    "audit.v1.json": AuditRecord,
}
"""File name under ``schemas/`` -> the struct its JSON Schema is generated from."""


def json_schema(struct: type[Struct]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a contract struct, with a stable title."""
    schema = msgspec.json.schema(struct)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"intentwatch {struct.__name__} v1"
    return schema
