"""What the tests of the faust agents (``agent.test_context()``, no Kafka) share: a
pipeline whose published records are captured, and the records to put in.

The ``pipeline`` and ``sent`` fixtures (``tests/conftest.py``) are made by
:func:`make_pipeline` and :class:`Sent`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from intentwatch.contracts import KIND_HEADER, TOPICS, encode
from intentwatch.models.config import ScoringConfig
from intentwatch.pipeline.app import Pipeline, agent_partition
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.worker import load_keyring
from intentwatch.tokens.grants import GrantVerifier, sign_grant
from intentwatch.tokens.keys import generate_key

ISSUER_KEY = generate_key("EdDSA")
OTHER_KEY = generate_key("EdDSA")


class Sent:
    """Records the pipeline published, by topic."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        self.records.append((topic, key, value, list(headers)))

    def on(self, logical: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
        return [(k, v, dict(h)) for t, k, v, h in self.records if t == TOPICS[logical]]

    def verdicts(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(value) for _, value, _ in self.on("verdicts")]


def agent_id() -> str:
    return f"spiffe://acme.org/agents/support/{uuid.uuid4().hex[:8]}"


def grant_token(agent: str, task: str = "t1", *, key=ISSUER_KEY, ttl: float = 900.0) -> bytes:
    now = time.time()
    return sign_grant({
        "grant_id": f"g-{task}", "agent_id": agent, "task_id": task,
        "credential_ids": [f"c-{task}"],
        "intent": "look up customer c-42 in the CRM", "tools": ["crm.*"],
        "targets": ["crm://*"], "data_labels": ["internal"],
        "issued_at": now if ttl > 0 else now + ttl - 60, "expires_at": now + ttl, "issuer": "https://broker.acme.org",
    }, key).encode()


def call(agent: str, task: str = "t1", tool: str = "crm.lookup_customer", **extra: Any) -> bytes:
    return encode({
        "event_id": str(uuid.uuid4()), "ts": time.time(), "agent_id": agent, "task_id": task,
        "tool": tool, "credential_id": f"c-{task}", "target": "crm://c-42",
        "data_labels": ["internal"], **extra,
    })


async def put(events: Any, kind: str, value: bytes, agent: str, **options: Any) -> Any:
    """Put one record of ``kind`` on the agent's partition of the input topic."""
    options.setdefault("key", agent.encode())
    options.setdefault("partition", agent_partition(agent, 4))
    return await events.put(value, headers=[(KIND_HEADER, kind.encode())], **options)


def make_pipeline(
    folder: Path, send: Sent, config: ScoringConfig | None = None, **other: Any
) -> Pipeline:
    """A pipeline of 4 partitions keeping its data and keys in ``folder``, trusting
    :data:`ISSUER_KEY`, publishing to ``send``, scoring by ``config`` (the shipped one when
    None; ``other``: other settings, e.g. ``flush_records``)."""
    settings = Settings(data_dir=folder / "data", keys_dir=folder / "keys", partitions=4,
                        **other)
    verifier = GrantVerifier({"keys": [ISSUER_KEY.public_jwk()]})
    return Pipeline(
        settings, keyring=load_keyring(settings.keys_dir), grant_verifier=verifier,
        config=config, send=send,
    )
