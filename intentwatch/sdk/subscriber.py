"""Receive intentwatch's revocations, verified and deduplicated, to cut an agent's access.

Every record on ``intentwatch.revocations.v1`` is a signed CAEP
``session-revoked`` token. :class:`RevocationSubscriber` verifies each one
against intentwatch's JWKS, drops and reports any that fail (forged, tampered,
signed with an unknown key), and drops repeats of a revocation it has already
delivered (the same cause always has the same ``jti``).

Example::

    from intentwatch import RevocationSubscriber

    subscriber = RevocationSubscriber(
        "127.0.0.1:9092", jwks="http://127.0.0.1:6066/.well-known/jwks.json")
    for revocation in subscriber:
        cut_access(revocation.credential_ids)

or, in a background thread::

    subscriber.run(lambda revocation: cut_access(revocation.credential_ids))
    ...
    subscriber.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from intentwatch.contracts import TOPICS, Revocation, parse_bootstrap
from intentwatch.sdk.errors import IntentwatchError, KafkaUnavailable, bad_address, missing_topic
from intentwatch.sdk.publisher import default_bootstrap
from intentwatch.tokens.revocations import RevocationRejected, RevocationVerifier

__all__ = ["RejectedRevocation", "RevocationSubscriber", "fetch_jwks"]

log = logging.getLogger("intentwatch.sdk.subscriber")

DEFAULT_MAX_AGE_SECONDS = 86400.0
"""How long after its issue a revocation is accepted unless ``max_age`` says otherwise."""
JWKS_REFRESH_SECONDS = 10.0
"""Least time between two JWKS downloads prompted by an unknown ``kid`` (a rotated key)."""


@dataclass(frozen=True, slots=True)
class RejectedRevocation:
    """A record on the revocation topic that failed verification and was dropped."""

    code: str
    """Why: ``malformed``, ``alg_not_allowed``, ``wrong_type``, ``unknown_kid``,
    ``bad_signature``, ``wrong_issuer``, ``wrong_audience`` or ``stale``."""
    message: str
    partition: int
    offset: int


class RevocationSubscriber:
    """Verified, deduplicated revocations for some agents or all.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers; ``$INTENTWATCH_BOOTSTRAP`` or ``127.0.0.1:9092`` when omitted.
    jwks
        intentwatch's public keys: a JWKS dict, the path of a JWKS file, or the URL of
        the worker's ``/.well-known/jwks.json`` (fetched again when a token names an
        unknown key, so key rotation needs no restart).
    agents
        SPIFFE IDs to receive revocations for; all agents when omitted.
    group_id
        Kafka consumer group: members share the partitions and resume from committed
        offsets. Without one, this subscriber reads every partition by itself.
    offset
        Where to start without committed offsets: ``latest`` (only new revocations) or
        ``earliest``.
    audience, issuer
        If given, every token's ``aud`` must name ``audience`` and its ``iss`` equal ``issuer``.
    max_age
        Seconds after its issue (``iat``) a revocation is still accepted; an older one is
        dropped as ``stale`` (a genuine revocation replayed later); ``None`` accepts any.
        Expired credentials need no revocation, so a day is plenty.
    on_rejected
        Called with a :class:`RejectedRevocation` for every dropped record.
    ready_timeout
        Seconds to wait at most, at construction, for the JWKS and the partition assignment:
        once the constructor returns, no revocation published afterwards is missed.
    consumer_config
        Extra :class:`kafka.KafkaConsumer` settings (TLS, SASL ...).

    Counters: ``accepted``, ``duplicates`` and ``rejected`` (by code).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        jwks: Mapping[str, Any] | str | Path,
        agents: Collection[str] | None = None,
        group_id: str | None = None,
        offset: Literal["latest", "earliest"] = "latest",
        audience: str | None = None,
        issuer: str | None = None,
        max_age: float | None = DEFAULT_MAX_AGE_SECONDS,
        on_rejected: Callable[[RejectedRevocation], None] | None = None,
        ready_timeout: float = 10.0,
        dedupe_window: int = 100_000,
        client_id: str = "intentwatch-revocations",
        **consumer_config: Any,
    ) -> None:
        self.agents = frozenset(agents) if agents is not None else None
        self.on_rejected = on_rejected
        self.accepted = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self._jwks = jwks
        self._audience, self._issuer, self._max_age = audience, issuer, max_age
        deadline = time.monotonic() + ready_timeout
        self._verifier = self._load_verifier(timeout=ready_timeout)
        self._jwks_loaded_at = time.monotonic()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backlog: deque[ConsumerRecord] = deque()
        self.bootstrap = bootstrap or default_bootstrap()
        try:
            servers = parse_bootstrap(self.bootstrap)
        except ValueError as error:
            raise bad_address(error) from None
        wait_ms = int(ready_timeout * 1000)
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=servers,
                client_id=client_id,
                group_id=group_id,
                auto_offset_reset=offset,
                enable_auto_commit=group_id is not None,
                fetch_max_wait_ms=100,
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=wait_ms,
                reconnect_backoff_max_ms=1000,  # back within a second of the broker's return
                **consumer_config,
            )
        except KafkaError as error:
            raise KafkaUnavailable(self.bootstrap, f"no answer within {ready_timeout:g} s "
                                   f"({type(error).__name__})") from None
        if not self._consumer.partitions_for_topic(TOPICS["revocations"]):
            self._consumer.close()
            raise missing_topic(TOPICS["revocations"], self.bootstrap)
        self._consumer.subscribe([TOPICS["revocations"]])
        self._wait_assigned(deadline)

    # -- receiving ----------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[Revocation]:
        """The new verified revocations, waiting up to ``timeout`` seconds for some."""
        if not self._backlog:
            batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
            for records in batches.values():
                self._backlog.extend(records)
        accepted = []
        while self._backlog:
            revocation = self._accept(self._backlog.popleft())
            if revocation is not None:
                accepted.append(revocation)
        return accepted

    def __iter__(self) -> Iterator[Revocation]:
        """Revocations as they arrive, until :meth:`stop`."""
        while not self._stop.is_set():
            yield from self.poll(0.2)

    def run(self, callback: Callable[[Revocation], None]) -> threading.Thread:
        """Call ``callback`` with each revocation from a background thread, until :meth:`stop`.

        An exception in ``callback`` is logged and the next revocation is delivered.
        """
        if self._thread is not None:
            raise RuntimeError("this subscriber already runs a thread")

        def loop() -> None:
            for revocation in self:
                try:
                    callback(revocation)
                except Exception:
                    log.exception("revocation callback failed for %s", revocation.revocation_id)

        self._thread = threading.Thread(target=loop, name="intentwatch-revocations", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        """End iteration (after the current poll) and join the :meth:`run` thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop, then leave the consumer group and release the connection.

        Call it from the thread that iterates, or after :meth:`run`.
        """
        self.stop()
        self._consumer.close()

    def __enter__(self) -> RevocationSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _accept(self, record: ConsumerRecord) -> Revocation | None:
        if self.agents is not None and _text(record.key) not in self.agents:
            return None
        try:
            revocation = self._verify(record.value)
        except RevocationRejected as error:
            self._reject(record, error)
            return None
        if self.agents is not None and revocation.agent_id not in self.agents:
            return None
        if revocation.revocation_id in self._seen:
            self.duplicates += 1
            return None
        self._seen[revocation.revocation_id] = None
        if len(self._seen) > self._dedupe_window:
            self._seen.popitem(last=False)
        self.accepted += 1
        return revocation

    def _verify(self, token: bytes) -> Revocation:
        try:
            return self._verifier.verify(token)
        except RevocationRejected as error:
            stale = time.monotonic() - self._jwks_loaded_at >= JWKS_REFRESH_SECONDS
            if error.code != "unknown_kid" or not _is_url(self._jwks) or not stale:
                raise
        self._verifier = self._load_verifier(timeout=5.0)
        self._jwks_loaded_at = time.monotonic()
        return self._verifier.verify(token)

    def _reject(self, record: ConsumerRecord, error: RevocationRejected) -> None:
        # The message names the cause and the key id, never the token.
        log.warning(
            "dropped revocation %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
        )
        self.rejected[error.code] += 1
        if self.on_rejected is not None:
            self.on_rejected(
                RejectedRevocation(error.code, str(error), record.partition, record.offset)
            )

    def _load_verifier(self, timeout: float) -> RevocationVerifier:
        jwks = self._jwks
        if isinstance(jwks, str) and _is_url(jwks):
            jwks = fetch_jwks(jwks, timeout)
        return RevocationVerifier(
            jwks, audience=self._audience, issuer=self._issuer, max_age=self._max_age
        )

    def _wait_assigned(self, deadline: float) -> None:
        while not self._consumer.assignment():
            if time.monotonic() > deadline:
                self._consumer.close()
                raise KafkaUnavailable(self.bootstrap, f"no partition of {TOPICS['revocations']} "
                                       "assigned in time")
            for records in self._consumer.poll(timeout_ms=100).values():
                self._backlog.extend(records)
        for partition in self._consumer.assignment():
            self._consumer.position(partition)  # resolves the start offset now


def fetch_jwks(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Download a JWKS, retrying for up to ``timeout`` seconds while the server starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5.0) as response:
                return json.loads(response.read())
        except OSError as error:
            if time.monotonic() > deadline:
                raise IntentwatchError(
                    f"could not fetch the JWKS at {url}: {error}",
                    "is the worker running? it serves intentwatch's keys on its web port",
                ) from None
            time.sleep(0.25)


def _is_url(source: object) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None
