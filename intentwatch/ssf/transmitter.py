"""The transmitter: revocations from Kafka to every SSF stream, by poll or by push.

:class:`Transmitter` reads the revocation topic (and, with ``risk_events``, the
verdict topic) from the oldest position any stream still needs, verifies each
revocation against the worker's JWKS, re-issues it for each stream (its
``aud``, the transmitter's ``iss``, the algorithm its receiver takes) into the
stream's :class:`~intentwatch.ssf.outbox.Outbox`, and delivers it: a poll
stream's receiver takes it with RFC 8936 requests, a push stream gets it POSTed
(RFC 8935), one SET after the other, retried with exponential backoff until the
receiver answers. Streams and their cursors live in Kafka
(:class:`~intentwatch.ssf.store.StreamStore`).

The HTTP endpoints are in :mod:`intentwatch.ssf.server`; this class is what they
call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from kafka.errors import KafkaError as AdminError

from intentwatch.contracts import TOPICS, Revocation, Verdict
from intentwatch.pipeline.topics import describe_topics
from intentwatch.sdk.subscriber import fetch_jwks
from intentwatch.ssf.events import (
    RISK_LEVEL_CHANGE,
    risk_level_change_claims,
    sign_set,
    verification_claims,
)
from intentwatch.ssf.outbox import Entry, Outbox
from intentwatch.ssf.receivers import Receiver, Receivers
from intentwatch.ssf.settings import SsfSettings
from intentwatch.ssf.store import StreamStore
from intentwatch.ssf.streams import (
    POLL,
    PUSH,
    Stream,
    StreamError,
    create_stream,
    replace_stream,
    update_stream,
)
from intentwatch.tokens.keys import Keyring, SigningKey
from intentwatch.tokens.revocations import (
    CONTENT_TYPE,
    SESSION_REVOKED,
    RevocationRejected,
    RevocationVerifier,
    encode_revocation,
)

__all__ = ["Transmitter", "backoff", "load_keyring"]

log = logging.getLogger(__name__)

SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
"""The transmitter signs with a key of each: RS256 (3072-bit) for the CAEP
interoperability profile, ES256 and EdDSA for receivers that prefer them."""

_JWKS_REFRESH_SECONDS = 10.0
_MAX_EVENTS = 1000
_verdict_decoder = msgspec.json.Decoder(Verdict)


def load_keyring(path: Path) -> Keyring:
    """The transmitter's keyring at ``path``, with a key for each of :data:`SIGNING_ALGS`."""
    try:
        ring = Keyring.load(path)
    except FileNotFoundError:
        ring = Keyring.create(path, SIGNING_ALGS[0])
    ring.ensure(SIGNING_ALGS)
    return ring


class Transmitter:
    """Streams, their outboxes and the loops that fill and empty them."""

    def __init__(self, settings: SsfSettings, receivers: Receivers, keyring: Keyring) -> None:
        self.settings = settings
        self.receivers = receivers
        self.keyring = keyring
        self.issuer = settings.issuer
        self.supported = [SESSION_REVOKED] + ([RISK_LEVEL_CHANGE] if settings.risk_events else [])
        self.topics = [TOPICS["revocations"]] + ([TOPICS["verdicts"]] if settings.risk_events
                                                 else [])
        self.streams: dict[str, Stream] = {}
        self.outboxes: dict[str, Outbox] = {}
        self.counts: dict[str, int] = {"read": 0, "rejected": 0, "pushed": 0, "push_retries": 0}
        self._store = StreamStore(settings.bootstrap, settings.state_topic,
                                  replication_factor=settings.replication_factor)
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[str, int] = {}
        self._pushers: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._verified_at: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None
        self._verifier: RevocationVerifier | None = None
        self._jwks_loaded_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the streams, position the consumer, start consuming, pushing and saving."""
        try:
            self._verifier = await self._load_verifier(timeout=60.0)
        except TimeoutError as error:
            raise SystemExit(f"{error}. Is a worker running? INTENTWATCH_SSF_UPSTREAM_JWKS names "
                             "the workers' JWKS (URL or file).") from None
        try:
            self.streams = await self._store.start()
        except (KafkaError, AdminError) as error:
            raise SystemExit(f"Cannot reach Kafka at {self.settings.bootstrap} ({error}). "
                             "`intentwatch kafka up` starts one; INTENTWATCH_BOOTSTRAP names "
                             "another.") from None
        for stream_id, stream in self.streams.items():
            self.outboxes[stream_id] = Outbox(stream.cursor, limit=self.settings.outbox_limit)
        self._consumer = AIOKafkaConsumer(  # a cursor before the log's start: its first record
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100, client_id="intentwatch-ssf",
        )
        await self._consumer.start()
        await self._position(await self._partitions())
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for stream in self.streams.values():
            self._start_pusher(stream)
        self._tasks = [asyncio.create_task(self._consume(), name="ssf-consume"),
                       asyncio.create_task(self._save_cursors_every(1.0), name="ssf-save")]
        for task in self._tasks:
            task.add_done_callback(_report_failure)

    async def stop(self) -> None:
        """Stop the loops and save where every stream's delivery stands."""
        for task in [*self._tasks, *self._pushers.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._pushers.values(), return_exceptions=True)
        try:
            await self._save_cursors()
        finally:
            if self._http is not None:
                await self._http.close()
            if self._consumer is not None:
                await self._consumer.stop()
            await self._store.stop()

    # -- stream management (the configuration, status and verification endpoints) --------

    def list_streams(self, receiver: Receiver) -> list[dict[str, Any]]:
        return [self.config(stream) for stream in self.streams.values()
                if stream.owner == receiver.name]

    def config(self, stream: Stream) -> dict[str, Any]:
        """The SSF Stream Configuration of ``stream``."""
        config = stream.config(issuer=self.issuer, supported=self.supported)
        config["min_verification_interval"] = math.ceil(self.settings.min_verification_interval)
        return config

    def stream(self, receiver: Receiver, stream_id: object) -> Stream:
        """The receiver's stream ``stream_id``; 404 for anyone else's."""
        if not isinstance(stream_id, str) or not stream_id:
            raise StreamError(400, "`stream_id` is required")
        stream = self.streams.get(stream_id)
        if stream is None or stream.owner != receiver.name:
            raise StreamError(404, f"no stream {stream_id!r} for this receiver")
        return stream

    async def create(self, receiver: Receiver, body: Mapping[str, Any]) -> Stream:
        stream = create_stream(body, stream_id=uuid.uuid4().hex, owner=receiver.name,
                               aud=receiver.audience, issuer=self.issuer)
        stream.cursor = dict(self._next)  # from now on: what the consumer has not read yet
        self.streams[stream.stream_id] = stream
        self.outboxes[stream.stream_id] = Outbox(stream.cursor, limit=self.settings.outbox_limit)
        await self._store.put(stream)
        self._start_pusher(stream)
        log.info("stream %s created for %s (%s)", stream.stream_id, receiver.name,
                 "push" if stream.delivery.method == PUSH else "poll")
        return stream

    async def update(self, receiver: Receiver, body: Mapping[str, Any], *, replace: bool) -> Stream:
        old = self.stream(receiver, body.get("stream_id"))
        change = replace_stream if replace else update_stream
        stream = change(old, body, issuer=self.issuer, supported=self.supported)
        stream.cursor = self.outboxes[stream.stream_id].cursor()
        self.streams[stream.stream_id] = stream
        await self._store.put(stream)
        self._start_pusher(stream)
        return stream

    async def delete(self, receiver: Receiver, stream_id: object) -> None:
        stream = self.stream(receiver, stream_id)
        self._stop_pusher(stream.stream_id)
        del self.streams[stream.stream_id], self.outboxes[stream.stream_id]
        await self._store.delete(stream.stream_id)
        log.info("stream %s deleted", stream.stream_id)

    async def set_status(self, receiver: Receiver, body: Mapping[str, Any]) -> Stream:
        stream = self.stream(receiver, body.get("stream_id"))
        status, reason = body.get("status"), body.get("reason")
        if status not in ("enabled", "paused", "disabled"):
            raise StreamError(400, "`status` must be enabled, paused or disabled")
        if reason is not None and not isinstance(reason, str):
            raise StreamError(400, "`reason` must be a string")
        stream.status, stream.reason = status, reason
        outbox = self.outboxes[stream.stream_id]
        if status == "disabled":
            outbox.clear()  # a disabled stream holds nothing for later
        stream.cursor = outbox.cursor()
        await self._store.put(stream)
        outbox.wake()
        return stream

    def verify(self, receiver: Receiver, body: Mapping[str, Any]) -> None:
        """Queue a verification event on the stream (answered ``204`` at once)."""
        stream = self.stream(receiver, body.get("stream_id"))
        state = body.get("state")
        if state is not None and not isinstance(state, str):
            raise StreamError(400, "`state` must be a string")
        now = time.monotonic()
        last = self._verified_at.get(stream.stream_id)
        if last is not None and now - last < self.settings.min_verification_interval:
            raise StreamError(429, "verification requested more often than every "
                                   f"{self.settings.min_verification_interval:g} s")
        self._verified_at[stream.stream_id] = now
        if stream.status == "disabled":
            return
        jti = uuid.uuid4().hex
        claims = verification_claims(stream.stream_id, state, issuer=self.issuer,
                                     audience=stream.aud, jti=jti, issued_at=time.time())
        self.outboxes[stream.stream_id].add(jti, sign_set(claims, self._key(stream)))

    # -- poll delivery (RFC 8936) ---------------------------------------------------------

    async def poll(self, receiver: Receiver, stream_id: str, body: Mapping[str, Any]
                   ) -> dict[str, Any]:
        """Answer one poll request: acknowledgements and errors first, then SETs."""
        stream = self.stream(receiver, stream_id)
        if stream.delivery.method != POLL:
            raise StreamError(400, f"stream {stream_id} is delivered by push, not poll")
        max_events, immediately, acks, errors = _poll_request(body)
        outbox = self.outboxes[stream_id]
        outbox.ack(acks)
        for jti, error in errors.items():
            log.warning("receiver %s could not process SET %s on stream %s: %s",
                        receiver.name, jti, stream_id, error.get("err"))
        outbox.ack(errors)
        if max_events == 0:
            return {"sets": {}}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if immediately else self.settings.poll_wait)
        while True:
            current = self.streams.get(stream_id)  # it may be paused or deleted meanwhile
            ready = current is not None and current.status == "enabled" and outbox.ready(
                now=time.monotonic(), redeliver_after=self.settings.redeliver_after)
            left = deadline - loop.time()
            if ready or left <= 0:
                break
            await outbox.wait(min(left, self.settings.redeliver_after))
        if not ready:
            return {"sets": {}}
        now, redeliver = time.monotonic(), self.settings.redeliver_after
        entries = outbox.take(max_events, now=now, redeliver_after=redeliver)
        return {"sets": {entry.jti: entry.token for entry in entries},
                "moreAvailable": outbox.ready(now=now, redeliver_after=redeliver)}

    # -- push delivery (RFC 8935) ---------------------------------------------------------

    def _start_pusher(self, stream: Stream) -> None:
        self._stop_pusher(stream.stream_id)
        if stream.delivery.method == PUSH:
            task = asyncio.create_task(self._push(stream.stream_id),
                                       name=f"ssf-push-{stream.stream_id}")
            task.add_done_callback(_report_failure)
            self._pushers[stream.stream_id] = task

    def _stop_pusher(self, stream_id: str) -> None:
        task = self._pushers.pop(stream_id, None)
        if task is not None:
            task.cancel()

    async def _push(self, stream_id: str) -> None:
        """Deliver the stream's SETs one after the other, retrying each until answered."""
        outbox, failures = self.outboxes[stream_id], 0
        while True:
            stream = self.streams[stream_id]
            entry = outbox.head() if stream.status == "enabled" else None
            if entry is None:
                await outbox.wait(60.0)
                continue
            outcome = await self._post(stream, entry)
            if outcome is None:
                outbox.ack([entry.jti])
                self.counts["pushed"] += 1
                failures = 0
                continue
            failures += 1
            delay = backoff(failures, self.settings.push_backoff, self.settings.push_backoff_max)
            self.counts["push_retries"] += 1
            log.warning("push of SET %s to stream %s failed (%s); retry %d in %.1f s",
                        entry.jti, stream_id, outcome, failures, delay)
            await asyncio.sleep(delay)

    async def _post(self, stream: Stream, entry: Entry) -> str | None:
        """POST one SET; ``None`` when the receiver took it (or refused it for good)."""
        assert self._http is not None
        headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}
        if stream.delivery.authorization_header:
            headers["Authorization"] = stream.delivery.authorization_header
        try:
            async with self._http.post(stream.delivery.endpoint_url, data=entry.token,
                                       headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                if response.status == 400:  # RFC 8935 2.3: the receiver rejects this SET
                    error = await _json_or_none(response)
                    log.warning("stream %s receiver rejected SET %s: %s", stream.stream_id,
                                entry.jti, error.get("err") if isinstance(error, dict) else error)
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return type(error).__name__

    # -- reading Kafka --------------------------------------------------------------------

    async def _partitions(self) -> list[TopicPartition]:
        """The partitions of the topics read, once they exist (a worker creates them)."""
        waited = False
        while True:
            found = await asyncio.to_thread(describe_topics, self.settings.bootstrap, self.topics)
            if all(found.values()):
                break
            if not waited:
                log.info("waiting for the topics %s to exist (is a worker running?)", self.topics)
                waited = True
            await asyncio.sleep(1.0)
        return [TopicPartition(topic.name, partition) for topic in found.values() if topic
                for partition in range(topic.partitions)]

    async def _position(self, partitions: list[TopicPartition]) -> None:
        """Start each partition at the oldest offset a stream still needs (the end if none)."""
        assert self._consumer is not None
        self._consumer.assign(partitions)
        for tp in partitions:
            source = f"{tp.topic}:{tp.partition}"
            needed = [stream.cursor.get(source, 0) for stream in self.streams.values()]
            if needed:
                self._consumer.seek(tp, min(needed))
            else:
                await self._consumer.seek_to_end(tp)
            self._next[source] = await self._consumer.position(tp)

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError as error:  # the client reconnects by itself; say so and go on
                log.warning("reading %s failed: %s", self.topics, error)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                source = f"{tp.topic}:{tp.partition}"
                for record in records:
                    await self._distribute(source, record.topic, record.offset, record.value)
                    self._next[source] = record.offset + 1

    async def _distribute(self, source: str, topic: str, offset: int, value: bytes | None) -> None:
        """Queue the SET of one record in every stream that gets it."""
        self.counts["read"] += 1
        waiting = [stream_id for stream_id, outbox in self.outboxes.items()
                   if outbox.wants(source, offset)]
        if not waiting:
            return
        event_type, make = await self._event(topic, value or b"")
        for stream_id in waiting:
            stream, outbox = self.streams.get(stream_id), self.outboxes.get(stream_id)
            if stream is None or outbox is None:  # deleted meanwhile
                continue
            if (make is None or stream.status == "disabled"
                    or event_type not in stream.events_delivered(self.supported)
                    or self.receivers.named(stream.owner) is None):
                outbox.skip(source, offset)
                continue
            jti, token = make(stream, self._key(stream))
            outbox.offer(source, offset, jti, token)

    async def _event(self, topic: str, value: bytes) -> tuple[str, Any]:
        """The event type of a record and how to issue its SET for a stream (``None``: none)."""
        if topic == TOPICS["revocations"]:
            revocation = await self._verify(value)
            if revocation is None:
                return SESSION_REVOKED, None

            def revoked(stream: Stream, key: SigningKey) -> tuple[str, str]:
                signed = encode_revocation(revocation, key, issuer=self.issuer,
                                           audience=stream.aud, issued_at=time.time())
                return revocation.revocation_id, signed.token

            return SESSION_REVOKED, revoked
        try:
            verdict = _verdict_decoder.decode(value)
        except msgspec.DecodeError:
            return RISK_LEVEL_CHANGE, None
        if verdict.decision != "alert":
            return RISK_LEVEL_CHANGE, None

        def risk(stream: Stream, key: SigningKey) -> tuple[str, str]:
            claims = risk_level_change_claims(verdict, issuer=self.issuer, audience=stream.aud,
                                              issued_at=time.time())
            return claims["jti"], sign_set(claims, key)

        return RISK_LEVEL_CHANGE, risk

    async def _verify(self, value: bytes) -> Revocation | None:
        assert self._verifier is not None
        try:
            return self._verifier.verify(value)
        except RevocationRejected as error:
            stale = time.monotonic() - self._jwks_loaded_at >= _JWKS_REFRESH_SECONDS
            if error.code == "unknown_kid" and _is_url(self.settings.upstream_jwks) and stale:
                try:  # a rotated worker key: fetch the JWKS again
                    self._verifier = await self._load_verifier(timeout=5.0)
                    return self._verifier.verify(value)
                except RevocationRejected as again:
                    error = again
                except TimeoutError as unreachable:
                    self._jwks_loaded_at = time.monotonic()
                    log.warning("kept the workers' keys: %s", unreachable)
            self.counts["rejected"] += 1
            log.warning("dropped a revocation that failed verification: %s", error)
            return None

    async def _load_verifier(self, timeout: float) -> RevocationVerifier:
        source = self.settings.upstream_jwks
        jwks = await asyncio.to_thread(fetch_jwks, source, timeout) if _is_url(source) else source
        self._jwks_loaded_at = time.monotonic()
        return RevocationVerifier(jwks, issuer=self.settings.upstream_issuer,
                                  audience=self.settings.upstream_audience)

    # -- keys and state -------------------------------------------------------------------

    def _key(self, stream: Stream) -> SigningKey:
        receiver = self.receivers.named(stream.owner)
        return self.keyring.for_alg(receiver.alg if receiver else SIGNING_ALGS[0])

    async def _save_cursors(self) -> None:
        for stream_id, stream in list(self.streams.items()):
            cursor = self.outboxes[stream_id].cursor()
            if cursor != stream.cursor:
                stream.cursor = cursor
                await self._store.put(stream)

    async def _save_cursors_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._save_cursors()


def backoff(failures: int, first: float, most: float) -> float:
    """Seconds to wait before the next push after ``failures`` failed attempts in a row:
    doubling from ``first``, never more than ``most``.

    >>> [backoff(n, 0.5, 3.0) for n in range(1, 6)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    return float(min(first * 2 ** (failures - 1), most))


def _report_failure(task: asyncio.Task[None]) -> None:
    """A loop that should run until stopped ended: say why, loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


def _poll_request(body: Mapping[str, Any]) -> tuple[int, bool, list[str], dict[str, Any]]:
    """``maxEvents``, ``returnImmediately``, ``ack`` and ``setErrs`` of an RFC 8936 request."""
    max_events = body.get("maxEvents", 100)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        raise StreamError(400, "`maxEvents` must be a non-negative integer")
    immediately = body.get("returnImmediately", False)
    if not isinstance(immediately, bool):
        raise StreamError(400, "`returnImmediately` must be true or false")
    acks = body.get("ack", [])
    if not isinstance(acks, list) or not all(isinstance(jti, str) for jti in acks):
        raise StreamError(400, "`ack` must be a list of jti strings")
    errors = body.get("setErrs", {})
    if not isinstance(errors, dict) or not all(isinstance(e, dict) for e in errors.values()):
        raise StreamError(400, "`setErrs` must map jti to {\"err\", \"description\"}")
    return min(max_events, _MAX_EVENTS), immediately, acks, errors


async def _json_or_none(response: aiohttp.ClientResponse) -> object:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def _is_url(source: object) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))
