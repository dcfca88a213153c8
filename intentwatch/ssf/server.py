"""The transmitter's HTTP API (aiohttp): discovery, keys, stream management, poll.

====================================== ================================================
``GET /.well-known/ssf-configuration`` Transmitter Configuration Metadata (public)
``GET /jwks.json``                      the signing keys (RS256, ES256, EdDSA; public)
``/ssf/streams``                        ``POST`` create, ``GET`` read (one or all),
                                        ``PATCH`` update, ``PUT`` replace, ``DELETE``
``/ssf/status``                         ``GET`` read, ``POST`` update a stream's status
``POST /ssf/verify``                    queue a verification event (``204``)
``POST /ssf/poll/{stream_id}``          RFC 8936 poll: ``ack``, ``setErrs``,
                                        ``maxEvents``, ``returnImmediately``
====================================== ================================================

Every endpoint but the first two wants ``Authorization: Bearer <token>`` of a
configured receiver (RFC 6750; ``401`` without it) and answers ``404`` for
streams of other receivers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from intentwatch.ssf.receivers import Receiver, load_receivers
from intentwatch.ssf.settings import SsfSettings
from intentwatch.ssf.streams import POLL, PUSH, StreamError
from intentwatch.ssf.transmitter import Transmitter, load_keyring

__all__ = ["make_app", "metadata", "run_transmitter"]

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}
_ERROR_CODES = {404: "not_found", 429: "too_many_requests"}
Handler = Callable[[web.Request, Receiver], Awaitable[web.StreamResponse]]


def metadata(issuer: str) -> dict[str, Any]:
    """The SSF 1.0 Transmitter Configuration Metadata of a transmitter at ``issuer``.

    >>> metadata("https://ssf.acme.org")["configuration_endpoint"]
    'https://ssf.acme.org/ssf/streams'
    """
    return {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks.json",
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": f"{issuer}/ssf/streams",
        "status_endpoint": f"{issuer}/ssf/status",
        "verification_endpoint": f"{issuer}/ssf/verify",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    }


def make_app(transmitter: Transmitter) -> web.Application:
    """The aiohttp application serving ``transmitter``."""
    issuer_path = urlsplit(transmitter.issuer).path.rstrip("/")
    app = web.Application(middlewares=[_errors])
    receivers = transmitter.receivers

    def authorized(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def check(request: web.Request) -> web.StreamResponse:
            receiver = receivers.authenticate(request.headers.get("Authorization"))
            if receiver is None:
                challenge = 'Bearer realm="intentwatch-ssf"'
                if "Authorization" in request.headers:
                    challenge += ', error="invalid_token"'
                return web.json_response(
                    {"error": "unauthorized", "description": "a receiver's bearer token is needed"},
                    status=401, headers={"WWW-Authenticate": challenge, **_NO_STORE},
                )
            return await handler(request, receiver)
        return check

    async def configuration(request: web.Request) -> web.Response:
        return web.json_response(metadata(transmitter.issuer))

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(transmitter.keyring.jwks(),
                                 content_type="application/jwk-set+json",
                                 headers={"Cache-Control": "max-age=60"})

    async def create(request: web.Request, receiver: Receiver) -> web.Response:
        stream = await transmitter.create(receiver, await _body(request))
        return _json(transmitter.config(stream), status=201)

    async def read(request: web.Request, receiver: Receiver) -> web.Response:
        stream_id = request.query.get("stream_id")
        if stream_id is None:
            return _json(transmitter.list_streams(receiver))
        return _json(transmitter.config(transmitter.stream(receiver, stream_id)))

    async def update(request: web.Request, receiver: Receiver) -> web.Response:
        replace = request.method == "PUT"
        stream = await transmitter.update(receiver, await _body(request), replace=replace)
        return _json(transmitter.config(stream))

    async def delete(request: web.Request, receiver: Receiver) -> web.Response:
        await transmitter.delete(receiver, request.query.get("stream_id"))
        return web.Response(status=204, headers=_NO_STORE)

    async def read_status(request: web.Request, receiver: Receiver) -> web.Response:
        return _json(_status(transmitter.stream(receiver, request.query.get("stream_id"))))

    async def update_status(request: web.Request, receiver: Receiver) -> web.Response:
        return _json(_status(await transmitter.set_status(receiver, await _body(request))))

    async def verify(request: web.Request, receiver: Receiver) -> web.Response:
        transmitter.verify(receiver, await _body(request))
        return web.Response(status=204, headers=_NO_STORE)

    async def poll(request: web.Request, receiver: Receiver) -> web.Response:
        body = await _body(request) if request.can_read_body else {}
        return _json(await transmitter.poll(receiver, request.match_info["stream_id"], body))

    app.router.add_get(f"/.well-known/ssf-configuration{issuer_path}", configuration)
    app.router.add_get(f"{issuer_path}/jwks.json", jwks)
    streams = f"{issuer_path}/ssf/streams"
    app.router.add_post(streams, authorized(create))
    app.router.add_get(streams, authorized(read))
    app.router.add_patch(streams, authorized(update))
    app.router.add_put(streams, authorized(update))
    app.router.add_delete(streams, authorized(delete))
    app.router.add_get(f"{issuer_path}/ssf/status", authorized(read_status))
    app.router.add_post(f"{issuer_path}/ssf/status", authorized(update_status))
    app.router.add_post(f"{issuer_path}/ssf/verify", authorized(verify))
    app.router.add_post(f"{issuer_path}/ssf/poll/{{stream_id}}", authorized(poll))
    return app


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except StreamError as error:
        code = _ERROR_CODES.get(error.status, "invalid_request")
        return web.json_response({"err": code, "description": str(error)}, status=error.status,
                                 headers=_NO_STORE)


def _status(stream: Any) -> dict[str, Any]:
    status = {"stream_id": stream.stream_id, "status": stream.status}
    if stream.reason is not None:
        status["reason"] = stream.reason
    return status


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=_NO_STORE)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise StreamError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise StreamError(400, "the request body must be a JSON object")
    return body


def run_transmitter(settings: SsfSettings) -> None:
    """Run the transmitter until SIGINT or SIGTERM; blocks."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("kafka", "aiokafka"):  # their INFO lines are about every connection
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    receivers = load_receivers(settings.receivers_file)
    keyring = load_keyring(settings.keys_dir)
    asyncio.run(_serve(Transmitter(settings, receivers, keyring)))


async def _serve(transmitter: Transmitter) -> None:
    settings = transmitter.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await transmitter.start()
    runner = web.AppRunner(make_app(transmitter), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.bind, settings.port).start()
        log.info("SSF transmitter %s on %s:%d: %d receiver(s), %d stream(s)", transmitter.issuer,
                 settings.bind, settings.port, len(transmitter.receivers),
                 len(transmitter.streams))
        await stop.wait()
    finally:
        await runner.cleanup()
        await transmitter.stop()
        log.info("SSF transmitter stopped")
