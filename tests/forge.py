"""Hand-made hostile tokens for the grant and revocation verifier tests.

Forgeries are built byte by byte on purpose: a JOSE library refuses to make most of them.
"""

import base64
import hashlib
import hmac
import json
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], bytes, str]:
    """Header, payload and raw signature segment of a compact JWS."""
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), unb64(payload), signature


def with_header(token: str, **changes: Any) -> str:
    """The token with its header changed (``None`` removes a member), signature kept."""
    header, payload, signature = token.split(".")
    fields = json.loads(unb64(header))
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return f"{b64(json.dumps(fields).encode())}.{payload}.{signature}"


def with_payload(token: str, payload: dict[str, Any]) -> str:
    """The token carrying another payload under the original signature."""
    header, _, signature = token.split(".")
    return f"{header}.{b64(json.dumps(payload).encode())}.{signature}"


def unsecured(payload: dict[str, Any], **header: Any) -> str:
    """An ``alg: none`` token (RFC 7519, 6): empty signature."""
    head = b64(json.dumps({"alg": "none", **header}).encode())
    return f"{head}.{b64(json.dumps(payload).encode())}."


def hmac_with_public_key(payload: dict[str, Any], public_jwk: dict[str, Any], **header: Any) -> str:
    """An HS256 token keyed with the issuer's *public* JWK: the algorithm-confusion attack."""
    head = b64(json.dumps({"alg": "HS256", "kid": public_jwk["kid"], **header}).encode())
    body = b64(json.dumps(payload).encode())
    secret = json.dumps(public_jwk).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"
