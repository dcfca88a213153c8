"""Engine outcomes and dead letters onto the output topics, keyed by agent SPIFFE ID.

Revocations go first and are awaited until the broker has them (retried a few
times), as are dead letters, so the input record's offset is committed only after
they are stored; a revocation that cannot be published is handed back, so the engine
can revoke again. Verdicts and audits are handed to the producer without waiting: it
batches them (``INTENTWATCH_PRODUCER_LINGER_MS``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from intentwatch.contracts import TOPICS, Revocation, encode
from intentwatch.models.engine import Outcome
from intentwatch.pipeline.dlq import DeadLetterLog, dead_letter
from intentwatch.tokens.keys import SigningKey
from intentwatch.tokens.revocations import encode_revocation

__all__ = ["Headers", "Publisher", "Send"]

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Send = Callable[[str, bytes | None, bytes, Headers], Awaitable[object]]
"""Publish one record: ``send(topic, key, value, headers)``. If what it returns is
awaitable (a delivery future), awaiting that waits until the broker has the record."""

RETRY_DELAYS = (0.2, 1.0, 3.0)
"""Seconds between the attempts to publish a revocation or a dead letter."""


class Publisher:
    """Publish verdicts, signed revocations (CAEP SETs), audits and dead letters.

    ``counts`` keeps what was published: ``verdicts.<decision>``,
    ``revocations.<reason code>``, ``audits``, ``dlq.<reason>``, and what could not
    be: ``unpublished.<kind>``.
    """

    def __init__(
        self,
        send: Send,
        signing_key: SigningKey,
        *,
        issuer: str,
        audience: str,
        wall: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self._send = send
        self._key = signing_key
        self._issuer = issuer
        self._audience = audience
        self._wall = wall
        self.retry_delays = tuple(retry_delays)
        """Seconds to wait before each further attempt to publish a revocation or dead letter."""
        self._dlq_log = DeadLetterLog()
        self.counts: Counter[str] = Counter()

    async def publish(self, outcome: Outcome) -> list[Revocation]:
        """Publish everything one event or tick produced, revocations first: each is
        signed and awaited until the broker has it before any verdict or audit of the
        outcome is handed to the producer, so none waits behind their batch.

        Returns the revocations that could not be published even after retries (the
        caller tells the engine, so that the task can be revoked again).
        """
        unpublished = []
        for revocation in outcome.revocations:
            try:
                signed = encode_revocation(
                    revocation, self._key, issuer=self._issuer, audience=self._audience,
                    issued_at=self._wall(),
                )
                await self._deliver(
                    TOPICS["revocations"], revocation.agent_id.encode(), signed.token.encode(),
                    signed.headers,
                )
            except Exception as error:
                self.counts["unpublished.revocations"] += 1
                unpublished.append(revocation)
                log.error("revocation %s (%s) of task %s of %s NOT published: %s; the task "
                          "is not marked revoked and its next violation revokes again",
                          revocation.revocation_id, revocation.reason_code, revocation.task_id,
                          revocation.agent_id, error)
                continue
            self.counts[f"revocations.{revocation.reason_code}"] += 1
            log.info("revoked %s task %s: %s", revocation.agent_id, revocation.task_id,
                     revocation.reason_code)
        for verdict in outcome.verdicts:
            await self._forward("verdicts", verdict.agent_id, encode(verdict))
            self.counts[f"verdicts.{verdict.decision}"] += 1
        for audit in outcome.audits:
            await self._forward("audit", audit.agent_id, encode(audit))
            self.counts["audits"] += 1
        return unpublished

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
    ) -> None:
        """Publish the record (cut to a bounded size) to the dead-letter topic, saying why.

        Returns once the broker has it; raises if it cannot be stored even after retries
        (the record must not be committed as handled).
        """
        letter = dead_letter(topic, partition, offset, key, value, error)
        await self._deliver(TOPICS["dlq"], letter.key, letter.value, letter.headers)
        self.counts[f"dlq.{letter.reason}"] += 1
        self._dlq_log.log(log, f"{topic}/{partition}@{offset}", letter.reason, error)

    async def _forward(self, logical: str, agent_id: str, value: bytes) -> None:
        """Send a verdict or audit without waiting for the broker; a failure is logged."""
        try:
            await self._send(TOPICS[logical], agent_id.encode(), value, ())
        except Exception as error:
            self.counts[f"unpublished.{logical}"] += 1
            log.error("%s of %s (%d bytes) not published: %s", logical, agent_id, len(value), error)

    async def _deliver(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Send and wait until the broker has the record, retrying after each delay."""
        for delay in (*self.retry_delays, None):
            try:
                result = await self._send(topic, key, value, headers)
                if inspect.isawaitable(result):
                    await result
                return
            except Exception as error:
                if delay is None:
                    raise
                log.warning("publishing to %s failed (%s); retrying in %g s", topic, error, delay)
                await asyncio.sleep(delay)
