"""SSF event streams: their configuration, status and delivery cursor, as data.

A :class:`Stream` is everything the transmitter keeps about one stream, and
what it stores (JSON) in its compacted state topic. :meth:`Stream.config` is the
SSF 1.0 *Stream Configuration* a receiver reads; :func:`create_stream`,
:func:`update_stream` and :func:`replace_stream` apply a receiver's request
(``POST``, ``PATCH``, ``PUT`` of the configuration endpoint) and raise
:class:`StreamError` with the HTTP status the specification names.

>>> stream = create_stream({"description": "broker A"}, stream_id="s1", owner="broker-a",
...     aud="https://broker-a.acme.org", issuer="https://ssf.acme.org")
>>> stream.delivery.method == POLL, stream.delivery.endpoint_url
(True, 'https://ssf.acme.org/ssf/poll/s1')
>>> update_stream(stream, {"stream_id": "s1", "description": "broker A, poll"},
...     issuer="https://ssf.acme.org", supported=[]).description
'broker A, poll'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct

__all__ = [
    "POLL",
    "PUSH",
    "Delivery",
    "Status",
    "Stream",
    "StreamError",
    "create_stream",
    "decode_stream",
    "encode_stream",
    "replace_stream",
    "update_stream",
]

PUSH = "urn:ietf:rfc:8935"
"""Push delivery (RFC 8935): the transmitter POSTs each SET to the receiver."""
POLL = "urn:ietf:rfc:8936"
"""Poll delivery (RFC 8936): the receiver polls the transmitter for SETs."""

Status = Literal["enabled", "paused", "disabled"]

_DESCRIPTION_MAX = 256
_TRANSMITTER_SUPPLIED = ("iss", "aud", "events_supported", "events_delivered")


class StreamError(ValueError):
    """A stream request the transmitter refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Delivery(Struct, kw_only=True, omit_defaults=True):
    """How SETs reach the receiver: ``method`` and its parameters."""

    method: str
    endpoint_url: str
    authorization_header: str | None = None
    """Push only: sent with every push request. A secret: never logged or read back."""


class Stream(Struct, kw_only=True, omit_defaults=True):
    """One event stream: the receiver's configuration, its status, where delivery is."""

    stream_id: str
    owner: str
    """The receiver (by its configured name) that created the stream and alone may use it."""
    aud: str | list[str]
    delivery: Delivery
    events_requested: list[str] | None = None
    description: str | None = None
    status: Status = "enabled"
    reason: str | None = None
    cursor: dict[str, int] = {}
    """``"topic:partition"`` -> the first offset not yet delivered and acknowledged."""

    def events_delivered(self, supported: Sequence[str]) -> list[str]:
        """The supported event types the receiver asked for (all of them if it did not ask)."""
        if self.events_requested is None:
            return list(supported)
        return [event for event in supported if event in self.events_requested]

    def config(self, *, issuer: str, supported: Sequence[str]) -> dict[str, Any]:
        """The SSF Stream Configuration, without the push ``authorization_header``."""
        delivery = {"method": self.delivery.method, "endpoint_url": self.delivery.endpoint_url}
        config: dict[str, Any] = {
            "stream_id": self.stream_id, "iss": issuer, "aud": self.aud, "delivery": delivery,
            "events_supported": list(supported),
            "events_delivered": self.events_delivered(supported),
        }
        if self.events_requested is not None:
            config["events_requested"] = list(self.events_requested)
        if self.description is not None:
            config["description"] = self.description
        return config


_decoder = msgspec.json.Decoder(Stream)


def encode_stream(stream: Stream) -> bytes:
    """A stream as JSON, for the state topic."""
    return msgspec.json.encode(stream)


def decode_stream(data: bytes) -> Stream:
    """A stream from its JSON (see :func:`encode_stream`)."""
    return _decoder.decode(data)


def create_stream(
    body: Mapping[str, Any], *, stream_id: str, owner: str, aud: str | list[str], issuer: str
) -> Stream:
    """A new stream from a Create Stream request body (receiver-supplied fields only)."""
    _check_object(body)
    return Stream(
        stream_id=stream_id, owner=owner, aud=aud,
        delivery=_delivery(body.get("delivery"), stream_id, issuer),
        events_requested=_events(body.get("events_requested")),
        description=_description(body.get("description")),
    )


def update_stream(
    stream: Stream, body: Mapping[str, Any], *, issuer: str, supported: Sequence[str]
) -> Stream:
    """``stream`` with the receiver-supplied fields present in a PATCH body changed."""
    _check_request(stream, body, issuer=issuer, supported=supported)
    changes: dict[str, Any] = {}
    if "delivery" in body:
        changes["delivery"] = _delivery(body["delivery"], stream.stream_id, issuer)
    if "events_requested" in body:
        changes["events_requested"] = _events(body["events_requested"])
    if "description" in body:
        changes["description"] = _description(body["description"])
    return msgspec.structs.replace(stream, **changes)


def replace_stream(
    stream: Stream, body: Mapping[str, Any], *, issuer: str, supported: Sequence[str]
) -> Stream:
    """``stream`` with all receiver-supplied fields taken from a PUT body (absent = removed)."""
    _check_request(stream, body, issuer=issuer, supported=supported)
    return msgspec.structs.replace(
        stream,
        delivery=_delivery(body.get("delivery"), stream.stream_id, issuer),
        events_requested=_events(body.get("events_requested")),
        description=_description(body.get("description")),
    )


def _check_object(body: object) -> None:
    if not isinstance(body, Mapping):
        raise StreamError(400, "the request body must be a JSON object")


def _check_request(
    stream: Stream, body: Mapping[str, Any], *, issuer: str, supported: Sequence[str]
) -> None:
    """Transmitter-supplied fields may be sent back, but only with their current values."""
    _check_object(body)
    current = stream.config(issuer=issuer, supported=supported)
    for name in _TRANSMITTER_SUPPLIED:
        if name in body and body[name] != current[name]:
            raise StreamError(400, f"`{name}` is set by the transmitter and cannot be changed")


def _delivery(value: object, stream_id: str, issuer: str) -> Delivery:
    if value is None:
        value = {"method": POLL}
    if not isinstance(value, Mapping) or not isinstance(value.get("method"), str):
        raise StreamError(400, "`delivery` must be an object with a `method`")
    method = value["method"]
    if method == POLL:  # the transmitter supplies the poll endpoint
        return Delivery(method=POLL, endpoint_url=f"{issuer}/ssf/poll/{stream_id}")
    if method != PUSH:
        raise StreamError(400, f"delivery method {method!r} is not supported; use {PUSH} or {POLL}")
    url = value.get("endpoint_url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).netloc:
        raise StreamError(400, "push delivery needs an http(s) `endpoint_url`")
    header = value.get("authorization_header")
    if header is not None and not isinstance(header, str):
        raise StreamError(400, "`authorization_header` must be a string")
    return Delivery(method=PUSH, endpoint_url=url, authorization_header=header)


def _events(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(event, str) for event in value):
        raise StreamError(400, "`events_requested` must be a list of event type URIs")
    return list(value)


def _description(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StreamError(400, "`description` must be a string")
    return value[:_DESCRIPTION_MAX]
