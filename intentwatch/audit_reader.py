"""Read the whole audit topic once: every approved-vs-actual record so far."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from intentwatch.contracts import TOPICS, AuditRecord
from intentwatch.topic_reader import read_topics

__all__ = ["read_audit_records"]

_decoder = msgspec.json.Decoder(AuditRecord)


def read_audit_records(bootstrap: str, *, timeout: float = 10.0) -> Iterator[AuditRecord]:
    """Yield the audit records from the beginning of the topic up to its current end."""
    for record in read_topics(bootstrap, [TOPICS["audit"]], timeout=timeout):
        yield _decoder.decode(record.value)
