"""Signing keys, key rings and JSON Web Key Sets (JWKS).

intentwatch signs its revocations with the *active* key of a :class:`Keyring`,
a folder of private JWK files; receivers verify them with the public keys of
:meth:`Keyring.jwks`. Grants are verified the same way, against the JWKS of the
trusted credential brokers. :class:`JwsVerifier` does the part both share: it
parses the keys once and checks a compact JWS in a fixed order, raising
:class:`TokenRejected` with a stable ``code``.

>>> key = generate_key("EdDSA", kid="k1")
>>> key
SigningKey(kid='k1', alg='EdDSA')
>>> token = key.sign(b'{"hello": "world"}', typ="JWT")
>>> verifier = JwsVerifier({"keys": [key.public_jwk()]}, types=["JWT"])
>>> header, payload = verifier.verify(token)
>>> header["kid"], payload
('k1', b'{"hello": "world"}')
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import DecodeError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import JWKRegistry, Key, KeyParameters, KeySet
from joserfc.jws import JWSAlgModel

from intentwatch.contracts import ContractError, format_ts

__all__ = [
    "DEFAULT_ALGORITHMS",
    "SIGNING_ALGORITHMS",
    "JwksSource",
    "JwsVerifier",
    "Keyring",
    "SigningKey",
    "TokenRejected",
    "generate_key",
    "load_jwks",
    "unverified_payload",
]

_KEY_TYPES: dict[str, tuple[str, str | int]] = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
    "RS256": ("RSA", 3072),
}
SIGNING_ALGORITHMS: tuple[str, ...] = tuple(_KEY_TYPES)
"""Algorithms :func:`generate_key` makes keys for."""

DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "Ed25519", "RS256")
"""Algorithms a verifier accepts unless told otherwise."""

_ASYMMETRIC = frozenset(
    {"ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "RS384", "RS512"}
    | {"PS256", "PS384", "PS512"}
)
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use")
_INDEX = "keyring.json"
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")

JwksSource = KeySet | Mapping[str, Any] | str | os.PathLike[str]
"""A JWKS: a joserfc ``KeySet``, a parsed JWKS document, or the path of a JWKS JSON file."""


class TokenRejected(ContractError):
    """A signed token failed verification; ``code`` is a stable name for the cause."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SigningKey:
    """A private signing key with its ``kid``, ``alg`` and ``created_at`` (epoch seconds).

    ``repr`` shows only the ``kid`` and ``alg``.

    >>> key = generate_key("ES256", kid="k1")
    >>> sorted(key.public_jwk())
    ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']
    """

    __slots__ = ("_jwk", "created_at")

    def __init__(self, jwk: Key, created_at: float) -> None:
        if not jwk.is_private or jwk.key_type == "oct":
            raise ValueError("a signing key must be a private asymmetric key")
        if jwk.alg not in _KEY_TYPES:
            raise ValueError(f"key `alg` must be one of {SIGNING_ALGORITHMS}, got {jwk.alg!r}")
        jwk.ensure_kid()
        self._jwk = jwk
        self.created_at = created_at

    @classmethod
    def from_jwk(cls, data: Mapping[str, Any], created_at: float) -> SigningKey:
        """Import a private JWK (a dict with ``kty``, ``alg`` and the private members)."""
        try:
            jwk = JWKRegistry.import_key(dict(data))
        except JoseError as exc:
            raise ValueError(f"invalid private JWK: {exc.description}") from None
        return cls(jwk, created_at)

    @property
    def kid(self) -> str:
        return str(self._jwk.kid)

    @property
    def alg(self) -> str:
        return str(self._jwk.alg)

    def sign(self, payload: bytes, *, typ: str) -> str:
        """A compact JWS of ``payload`` with protected header ``alg``, ``kid`` and ``typ``."""
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        return jws.serialize_compact(header, payload, self._jwk, registry=_SIGNING_REGISTRY)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK, for a JWKS: public members and ``kid``, ``alg``, ``use: sig``."""
        data = self._jwk.as_dict(private=False)
        return {name: data[name] for name in _PUBLIC_MEMBERS if name in data}

    def private_jwk(self) -> dict[str, Any]:
        """The private JWK, for the key file only: never log or publish it."""
        return dict(self._jwk.as_dict(private=True))

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


class _Registry(jws.JWSRegistry):
    """joserfc's registry, limited to ``algorithms``, without the per-call warning.

    RFC 9864 deprecates "EdDSA" for the fully specified "Ed25519", and joserfc
    warns on every use; most JOSE libraries know only "EdDSA", so intentwatch
    supports both on purpose.
    """

    def __init__(self, algorithms: Collection[str]) -> None:
        super().__init__(algorithms=list(algorithms), strict_check_header=False)

    def get_alg(self, name: str) -> JWSAlgModel:
        if self.allowed is None or name not in self.allowed:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} is not allowed")
        return self.algorithms[name]


_SIGNING_REGISTRY = _Registry(SIGNING_ALGORITHMS)


def generate_key(alg: str = "ES256", kid: str | None = None) -> SigningKey:
    """A new private key for ``alg`` (ES256, EdDSA, Ed25519 or RS256 with 3072 bits).

    ``kid`` defaults to the key's RFC 7638 thumbprint.

    >>> key = generate_key()
    >>> key.alg, len(key.kid)
    ('ES256', 43)
    """
    if alg not in _KEY_TYPES:
        raise ValueError(f"`alg` must be one of {SIGNING_ALGORITHMS}, got {alg!r}")
    key_type, crv_or_size = _KEY_TYPES[alg]
    parameters: KeyParameters = {"alg": alg, "use": "sig"}
    if kid is not None:
        parameters["kid"] = kid
    jwk = JWKRegistry.generate_key(key_type, crv_or_size, parameters)
    return SigningKey(jwk, time.time())


def load_jwks(source: JwksSource) -> KeySet:
    """Parse a JWKS of public keys: a ``KeySet``, a JWKS dict, or a JWKS JSON file.

    Refuses private key material and symmetric keys, so a misplaced private key
    file cannot become a verifier's trust anchor.
    """
    if isinstance(source, KeySet):
        key_set = source
    else:
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_bytes())
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise ValueError("a JWKS must be a JSON object with a `keys` list")
        try:
            key_set = KeySet.import_key_set(dict(data))  # type: ignore[arg-type]
        except JoseError as exc:
            raise ValueError(f"invalid JWKS: {exc.description}") from None
    for key in key_set:
        if key.key_type == "oct" or key.is_private:
            raise ValueError(
                f"JWKS key {key.kid!r} holds secret material: publish public keys only"
            )
    return key_set


def _media_type(typ: Any) -> str | None:
    # RFC 7515, 4.1.9: "application/" may be left out, and the comparison ignores case.
    return typ.lower().removeprefix("application/") if isinstance(typ, str) else typ


class JwsVerifier:
    """Verify compact JWS against a JWKS; keys are parsed once, at construction.

    Checks run cheapest first, and the first failure raises ``rejected(code, message)``:

    ============== ========================================================
    code           cause
    ============== ========================================================
    malformed      not a compact JWS, or an invalid header
    alg_not_allowed ``alg`` outside ``algorithms`` (``none``, HMAC, ...), or
                   a key that does not fit the algorithm
    wrong_type     ``typ`` not among ``types`` (``None`` admits no ``typ``)
    unknown_kid    no key in the set has the token's ``kid``
    bad_signature  the signature does not verify
    ============== ========================================================

    ``jwks=None`` means no keys: every token is then an ``unknown_kid``.
    """

    def __init__(
        self,
        jwks: JwksSource | None,
        *,
        types: Collection[str | None],
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        rejected: type[TokenRejected] = TokenRejected,
    ) -> None:
        unsupported = sorted(set(algorithms) - _ASYMMETRIC)
        if unsupported:
            raise ValueError(
                f"{unsupported} cannot be verified with public keys; allowed: {sorted(_ASYMMETRIC)}"
            )
        self.algorithms = frozenset(algorithms)
        self.types = frozenset(_media_type(typ) for typ in types)
        self.rejected = rejected
        self._registry = _Registry(algorithms)
        self._keys: dict[str, Key] = {}
        for key in load_jwks(jwks) if jwks is not None else ():
            if key.get("use", "sig") != "sig":
                continue
            if key.kid in self._keys:
                raise ValueError(f"JWKS has two keys with kid {key.kid!r}")
            self._keys[str(key.kid)] = key

    @property
    def kids(self) -> list[str]:
        """The ids of the keys tokens may be signed with."""
        return list(self._keys)

    def verify(self, token: bytes | str) -> tuple[dict[str, Any], bytes]:
        """The protected header and the payload of a valid token."""
        value = token.encode() if isinstance(token, str) else token
        try:
            obj = jws.extract_compact(value.strip(), registry=self._registry)
            header = obj.headers()
            if not isinstance(header, dict):
                raise DecodeError("header is not a JSON object")
            self._registry.check_header(header)
        except JoseError as exc:
            raise self.rejected("malformed", f"not a valid compact JWS ({exc.error})") from None
        alg = header["alg"]
        if alg not in self.algorithms:
            raise self.rejected("alg_not_allowed", f"alg {alg!r} is not accepted")
        if _media_type(header.get("typ")) not in self.types:
            raise self.rejected("wrong_type", f"typ {header.get('typ')!r} is not accepted")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise self.rejected("unknown_kid", f"no key with kid {kid!r}")
        if key.alg not in (None, alg):
            raise self.rejected("alg_not_allowed", f"key {kid!r} is for {key.alg}, not {alg}")
        try:
            self._registry.get_alg(alg).check_key(key)
        except JoseError:
            raise self.rejected(
                "alg_not_allowed", f"key {kid!r} ({key.key_type}) does not fit alg {alg}"
            ) from None
        if not jws.validate_compact(obj, key, registry=self._registry):
            raise self.rejected("bad_signature", f"signature does not verify with key {kid!r}")
        return header, obj.payload


def unverified_payload(token: bytes | str) -> bytes | None:
    """The payload of a compact JWS *without* checking it, or ``None`` if it is not one:
    only to say what a rejected token claimed, never to trust it.

    >>> unverified_payload(generate_key("EdDSA").sign(b'{"a": 1}', typ="JWT"))
    b'{"a": 1}'
    >>> unverified_payload("not a token") is None
    True
    """
    value = token.encode() if isinstance(token, str) else token
    try:
        return jws.extract_compact(value.strip()).payload
    except (JoseError, ValueError):
        return None


class Keyring:
    """A folder of private signing keys: the newest signs, all are published.

    Layout: one private JWK per key in ``<kid>.jwk`` and ``keyring.json``
    listing the kids oldest first with their creation times; every file is
    mode 0600 and the folder 0700. Retired keys are deleted.

    >>> import tempfile
    >>> ring = Keyring.create(tempfile.mkdtemp() + "/keys", "EdDSA")
    >>> old = ring.active
    >>> new = ring.rotate()
    >>> ring.active is new, [jwk["kid"] for jwk in ring.jwks()["keys"]] == [new.kid, old.kid]
    (True, True)
    >>> ring.retire(old.kid)
    >>> len(Keyring.load(ring.path).keys)
    1
    """

    def __init__(self, path: str | os.PathLike[str], keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.path = Path(path)
        self._keys = list(keys)

    @classmethod
    def create(cls, path: str | os.PathLike[str], alg: str = "ES256") -> Keyring:
        """Make a keyring folder holding one new key; refuses to overwrite a keyring."""
        folder = Path(path)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (folder / _INDEX).exists():
            raise FileExistsError(f"{folder} already holds a keyring")
        ring = cls(folder, [generate_key(alg)])
        ring._write_key(ring.active)
        ring._write_index()
        return ring

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read a keyring folder; refuses key files that others than the owner can read."""
        folder = Path(path)
        index = json.loads(_read_private(folder / _INDEX))
        keys = []
        for entry in index["keys"]:
            jwk = json.loads(_read_private(_key_file(folder, entry["kid"])))
            created_at = datetime.fromisoformat(entry["created_at"]).timestamp()
            key = SigningKey.from_jwk(jwk, created_at)
            if key.kid != entry["kid"]:
                raise ValueError(f"{_key_file(folder, entry['kid'])} holds key {key.kid!r}")
            keys.append(key)
        return cls(folder, keys)

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """All keys, oldest first."""
        return tuple(self._keys)

    @property
    def active(self) -> SigningKey:
        """The key that signs: the newest."""
        return self._keys[-1]

    def for_alg(self, alg: str) -> SigningKey:
        """The key that signs for receivers that want ``alg``: the newest of that algorithm."""
        for key in reversed(self._keys):
            if key.alg == alg:
                return key
        raise KeyError(f"{self.path} has no {alg} key")

    def ensure(self, algs: Collection[str]) -> list[SigningKey]:
        """Add a key for each of ``algs`` the ring has none of; return the keys added.

        >>> import tempfile
        >>> ring = Keyring.create(tempfile.mkdtemp() + "/keys", "RS256")
        >>> [key.alg for key in ring.ensure(["RS256", "ES256", "EdDSA"])]
        ['ES256', 'EdDSA']
        >>> ring.for_alg("RS256").alg, ring.ensure(["ES256"])
        ('RS256', [])
        """
        present = {key.alg for key in self._keys}
        return [self.rotate(alg) for alg in dict.fromkeys(algs) if alg not in present]

    def rotate(self, alg: str | None = None) -> SigningKey:
        """Add a new active key (``alg`` defaults to the current one's); old keys stay published."""
        key = generate_key(alg or self.active.alg)
        self._write_key(key)
        self._keys.append(key)
        self._write_index()
        return key

    def retire(self, kid: str) -> None:
        """Delete a key that no longer signs, once no token it signed is still in use."""
        if kid == self.active.kid:
            raise ValueError(f"{kid!r} is the active key: rotate before retiring it")
        key = next((key for key in self._keys if key.kid == kid), None)
        if key is None:
            raise KeyError(kid)
        self._keys.remove(key)
        self._write_index()
        _key_file(self.path, kid).unlink(missing_ok=True)

    def prune(self, older_than: float, *, now: float | None = None) -> list[str]:
        """Retire every key replaced more than ``older_than`` seconds ago; return their kids.

        A key is replaced when the next one of its algorithm is created. Pick
        ``older_than`` above the longest time a receiver may still verify its
        tokens (e.g. the retention of ``intentwatch.revocations.v1``).
        """
        now = time.time() if now is None else now
        stale = []
        for index, old in enumerate(self._keys):
            new = next((key for key in self._keys[index + 1:] if key.alg == old.alg), None)
            if new is not None and now - new.created_at > older_than:
                stale.append(old.kid)
        for kid in stale:
            self.retire(kid)
        return stale

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWKS of every key, newest first: serve it at ``/.well-known/jwks.json``."""
        return {"keys": [key.public_jwk() for key in reversed(self._keys)]}

    def _write_key(self, key: SigningKey) -> None:
        _write_private(_key_file(self.path, key.kid), json.dumps(key.private_jwk()).encode())

    def _write_index(self) -> None:
        entries = [{"kid": key.kid, "created_at": format_ts(key.created_at)} for key in self._keys]
        _write_private(self.path / _INDEX, json.dumps({"keys": entries}, indent=2).encode())

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r}, active={self.active.kid!r}, keys={len(self._keys)})"


def _key_file(folder: Path, kid: str) -> Path:
    if not _KID_RE.fullmatch(kid):
        raise ValueError(f"keyring kids are RFC 7638 thumbprints, got {kid!r}")
    return folder / f"{kid}.jwk"


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _read_private(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others than its owner: chmod 600 it")
    return path.read_bytes()
