"""Engine outcomes and dead letters onto the output topics, keyed by agent SPIFFE ID."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from intentwatch.contracts import TOPICS, encode
from intentwatch.models.engine import Outcome
from intentwatch.pipeline.decoding import reason_of
from intentwatch.pipeline.dlq import dead_letter_headers
from intentwatch.tokens.keys import SigningKey
from intentwatch.tokens.revocations import encode_revocation

__all__ = ["Headers", "Publisher", "Send"]

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Send = Callable[[str, bytes | None, bytes, Headers], Awaitable[object]]
"""Publish one record: ``send(topic, key, value, headers)``."""


class Publisher:
    """Publish verdicts, signed revocations (CAEP SETs), audits and dead letters.

    ``counts`` keeps what was published: ``verdicts.<decision>``,
    ``revocations.<reason code>``, ``audits`` and ``dlq.<reason>``.
    """

    def __init__(
        self,
        send: Send,
        signing_key: SigningKey,
        *,
        issuer: str,
        audience: str,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._key = signing_key
        self._issuer = issuer
        self._audience = audience
        self._wall = wall
        self.counts: Counter[str] = Counter()

    async def publish(self, outcome: Outcome) -> None:
        """Publish everything one event or tick produced, verdicts first."""
        for verdict in outcome.verdicts:
            await self._send(TOPICS["verdicts"], verdict.agent_id.encode(), encode(verdict), ())
            self.counts[f"verdicts.{verdict.decision}"] += 1
        for revocation in outcome.revocations:
            signed = encode_revocation(
                revocation, self._key, issuer=self._issuer, audience=self._audience,
                issued_at=self._wall(),
            )
            await self._send(
                TOPICS["revocations"], revocation.agent_id.encode(), signed.token.encode(),
                signed.headers,
            )
            self.counts[f"revocations.{revocation.reason_code}"] += 1
            log.info("revoked %s task %s: %s", revocation.agent_id, revocation.task_id,
                     revocation.reason_code)
        for audit in outcome.audits:
            await self._send(TOPICS["audit"], audit.agent_id.encode(), encode(audit), ())
            self.counts["audits"] += 1

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
    ) -> None:
        """Publish the record's original bytes to the dead-letter topic, saying why."""
        reason = reason_of(error)
        headers = dead_letter_headers(topic, partition, offset, error)
        await self._send(TOPICS["dlq"], key, value or b"", headers)
        self.counts[f"dlq.{reason}"] += 1
        log.warning("dead letter %s/%d@%d (%s): %s", topic, partition, offset, reason, error)
