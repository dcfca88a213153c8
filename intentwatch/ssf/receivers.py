"""The receivers an operator lets use the transmitter, each with its bearer token.

``INTENTWATCH_SSF_RECEIVERS`` names a JSON file, readable by its owner only::

    {"receivers": [
        {"name": "broker-a", "token": "…", "audience": "https://broker-a.acme.org"},
        {"name": "gateway", "token_sha256": "<hex>", "alg": "ES256"}
    ]}

A receiver presents ``Authorization: Bearer <token>`` (RFC 6750) on every stream
management and poll request; it sees and manages only the streams it created.
``audience`` is the ``aud`` of its streams' SETs (default: its name) and ``alg``
the signature algorithm of its SETs (default ``RS256``, as the CAEP
interoperability profile requires). Only the SHA-256 of each token is kept in
memory, and tokens are never logged.

>>> receivers = Receivers([Receiver("broker-a", _digest("s3cret"), "urn:broker-a", "RS256")])
>>> receivers.authenticate("Bearer s3cret").name, receivers.authenticate("Bearer nope")
('broker-a', None)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from intentwatch.tokens.keys import SIGNING_ALGORITHMS

__all__ = ["Receiver", "Receivers", "load_receivers"]


@dataclass(frozen=True, slots=True)
class Receiver:
    """One receiver allowed to manage streams."""

    name: str
    token_sha256: bytes = field(repr=False)
    audience: str
    alg: str


class Receivers:
    """Look up the receiver a bearer token belongs to."""

    def __init__(self, receivers: Iterable[Receiver]) -> None:
        self._by_digest: dict[bytes, Receiver] = {}
        self._by_name: dict[str, Receiver] = {}
        for receiver in receivers:
            if receiver.token_sha256 in self._by_digest:
                raise ValueError(f"receivers {receiver.name!r} and "
                                 f"{self._by_digest[receiver.token_sha256].name!r} share a token")
            if receiver.name in self._by_name:
                raise ValueError(f"two receivers are named {receiver.name!r}")
            self._by_digest[receiver.token_sha256] = receiver
            self._by_name[receiver.name] = receiver

    def __len__(self) -> int:
        return len(self._by_digest)

    def named(self, name: str) -> Receiver | None:
        """The receiver called ``name``, if it is still configured."""
        return self._by_name.get(name)

    def authenticate(self, authorization: str | None) -> Receiver | None:
        """The receiver whose token an ``Authorization`` header carries, if any."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        for known, receiver in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return receiver
        return None


def load_receivers(path: str | os.PathLike[str]) -> Receivers:
    """Read a receivers file (see the module docstring); refuse one others can read."""
    file = Path(path)
    if file.stat().st_mode & 0o077:
        raise PermissionError(f"{file} holds bearer tokens but others can read it: chmod 600 it")
    data = json.loads(file.read_bytes())
    entries = data.get("receivers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{file}: expected {{\"receivers\": [{{\"name\", \"token\"}}, ...]}}")
    return Receivers(_receiver(entry, file) for entry in entries)


def _receiver(entry: object, file: Path) -> Receiver:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError(f"{file}: every receiver needs a `name`")
    name = entry["name"]
    if isinstance(entry.get("token"), str) and entry["token"]:
        digest = _digest(entry["token"])
    elif isinstance(entry.get("token_sha256"), str):
        digest = bytes.fromhex(entry["token_sha256"])
    else:
        raise ValueError(f"{file}: receiver {name!r} needs a `token` or `token_sha256`")
    alg = entry.get("alg", "RS256")
    if alg not in SIGNING_ALGORITHMS:
        raise ValueError(f"{file}: receiver {name!r}: `alg` must be one of {SIGNING_ALGORITHMS}")
    return Receiver(name, digest, str(entry.get("audience", name)), alg)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
