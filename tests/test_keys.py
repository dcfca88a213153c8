import json
import os
import stat

import pytest
from joserfc.jwk import KeySet, thumbprint

from intentwatch.tokens.keys import (
    JwsVerifier,
    Keyring,
    SigningKey,
    TokenRejected,
    generate_key,
    load_jwks,
)

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
REQUIRED_PUBLIC = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


@pytest.fixture(scope="module")
def rsa_key():
    return generate_key("RS256")


@pytest.fixture(params=["ES256", "EdDSA", "Ed25519", "RS256"])
def any_key(request, rsa_key):
    return rsa_key if request.param == "RS256" else generate_key(request.param)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generated_key_kid_is_rfc7638_thumbprint(any_key):
    jwk = any_key.public_jwk()
    assert any_key.kid == thumbprint({name: jwk[name] for name in REQUIRED_PUBLIC[jwk["kty"]]})
    assert jwk["kid"] == any_key.kid


def test_generate_key_takes_a_kid_and_refuses_symmetric_algorithms():
    assert generate_key("ES256", kid="2026-11").kid == "2026-11"
    for alg in ("HS256", "none", "ES384"):
        with pytest.raises(ValueError, match="alg"):
            generate_key(alg)


def test_public_jwk_has_no_private_members(any_key):
    jwk = any_key.public_jwk()
    assert not PRIVATE_MEMBERS & set(jwk)
    assert jwk["use"] == "sig"
    assert jwk["alg"] == any_key.alg
    assert PRIVATE_MEMBERS & set(any_key.private_jwk())


def test_repr_and_str_hide_key_material(any_key, tmp_path):
    secret = any_key.private_jwk()["d"]
    assert repr(any_key) == f"SigningKey(kid={any_key.kid!r}, alg={any_key.alg!r})"
    assert secret not in str(any_key)
    assert not hasattr(any_key, "__dict__")
    ring = Keyring.create(tmp_path / "keys")
    assert ring.active.private_jwk()["d"] not in repr(ring)
    assert repr(ring).startswith("Keyring(")


def test_signing_key_refuses_public_and_symmetric_keys():
    from joserfc.jwk import ECKey, OctKey

    with pytest.raises(ValueError, match="private"):
        SigningKey(ECKey.import_key(generate_key().public_jwk()), 0.0)
    with pytest.raises(ValueError, match="private"):
        SigningKey(OctKey.generate_key(256, {"alg": "HS256"}), 0.0)


def test_keyring_files_are_private_and_reload(tmp_path):
    folder = tmp_path / "keys"
    ring = Keyring.create(folder, "EdDSA")
    assert mode(folder) == 0o700
    files = sorted(path.name for path in folder.iterdir())
    assert files == sorted([f"{ring.active.kid}.jwk", "keyring.json"])
    assert all(mode(path) == 0o600 for path in folder.iterdir())
    again = Keyring.load(folder)
    assert again.active.kid == ring.active.kid
    assert again.active.alg == "EdDSA"
    assert again.jwks() == ring.jwks()
    assert again.active.created_at == pytest.approx(ring.active.created_at, abs=0.001)


def test_create_refuses_to_overwrite(tmp_path):
    Keyring.create(tmp_path / "keys")
    with pytest.raises(FileExistsError):
        Keyring.create(tmp_path / "keys")


def test_load_refuses_key_files_others_can_read(tmp_path):
    ring = Keyring.create(tmp_path / "keys")
    os.chmod(tmp_path / "keys" / f"{ring.active.kid}.jwk", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Keyring.load(tmp_path / "keys")


def test_load_refuses_index_naming_paths(tmp_path):
    folder = tmp_path / "keys"
    ring = Keyring.create(folder)
    index = {"keys": [{"kid": "../escape", "created_at": "2026-11-02T08:00:00Z"}]}
    (folder / "keyring.json").write_text(json.dumps(index))
    os.chmod(folder / "keyring.json", 0o600)
    with pytest.raises(ValueError, match="thumbprints"):
        Keyring.load(folder)
    index = {"keys": [{"kid": "A" * 43, "created_at": "2026-11-02T08:00:00Z"}]}
    (folder / "keyring.json").write_text(json.dumps(index))
    os.rename(folder / f"{ring.active.kid}.jwk", folder / f"{'A' * 43}.jwk")
    with pytest.raises(ValueError, match="holds key"):
        Keyring.load(folder)


def test_rotation_keeps_old_keys_verifiable_until_retired(tmp_path):
    ring = Keyring.create(tmp_path / "keys", "ES256")
    old = ring.active
    old_token = old.sign(b"{}", typ="JWT")
    new = ring.rotate(alg="EdDSA")
    assert ring.active is new and new.alg == "EdDSA"
    assert [jwk["kid"] for jwk in ring.jwks()["keys"]] == [new.kid, old.kid]
    verifier = JwsVerifier(ring.jwks(), types=["JWT"])
    verifier.verify(old_token)
    verifier.verify(new.sign(b"{}", typ="JWT"))
    assert [key.kid for key in Keyring.load(ring.path).keys] == [old.kid, new.kid]

    ring.retire(old.kid)
    assert not (ring.path / f"{old.kid}.jwk").exists()
    assert [key.kid for key in Keyring.load(ring.path).keys] == [new.kid]
    with pytest.raises(TokenRejected) as caught:
        JwsVerifier(ring.jwks(), types=["JWT"]).verify(old_token)
    assert caught.value.code == "unknown_kid"


def test_retire_refuses_the_active_key_and_unknown_kids(tmp_path):
    ring = Keyring.create(tmp_path / "keys")
    with pytest.raises(ValueError, match="rotate"):
        ring.retire(ring.active.kid)
    with pytest.raises(KeyError):
        ring.retire("nope")


def test_prune_retires_keys_replaced_long_enough_ago(tmp_path):
    ring = Keyring.create(tmp_path / "keys")
    first = ring.active
    second = ring.rotate()
    third = ring.rotate()
    first.created_at, second.created_at, third.created_at = 0.0, 1000.0, 5000.0
    assert ring.prune(3600, now=4000.0) == []
    assert ring.prune(60, now=1100.0) == [first.kid]
    assert [key.kid for key in Keyring.load(ring.path).keys] == [second.kid, third.kid]
    assert ring.prune(60, now=5100.0) == [second.kid]
    assert ring.keys == (third,)


def test_a_ring_with_a_key_per_algorithm_signs_and_prunes_per_algorithm(tmp_path):
    ring = Keyring.create(tmp_path / "keys", "RS256")
    rsa, ec, ed = ring.active, *ring.ensure(["RS256", "ES256", "EdDSA"])
    assert [ring.for_alg(alg) for alg in ("RS256", "ES256", "EdDSA")] == [rsa, ec, ed]
    newer_rsa = ring.rotate("RS256")
    rsa.created_at, ec.created_at, ed.created_at, newer_rsa.created_at = 0.0, 0.0, 0.0, 100.0
    assert ring.for_alg("RS256") is newer_rsa
    assert ring.prune(60, now=1000.0) == [rsa.kid], "only the replaced RS256 key goes"
    assert {key.alg for key in Keyring.load(ring.path).keys} == {"RS256", "ES256", "EdDSA"}
    with pytest.raises(KeyError, match="PS256"):
        ring.for_alg("PS256")


def test_jwks_holds_public_keys_only(tmp_path, rsa_key):
    ring = Keyring.create(tmp_path / "keys", "ES256")
    ring.rotate("EdDSA")
    ring.rotate("RS256")
    jwks = ring.jwks()
    assert [jwk["kty"] for jwk in jwks["keys"]] == ["RSA", "OKP", "EC"]
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert {"kid", "alg", "use"} <= set(jwk) and jwk["use"] == "sig"
    assert '"d"' not in json.dumps(jwks)


def test_load_jwks_from_dict_file_and_key_set(tmp_path):
    jwks = {"keys": [generate_key().public_jwk(), generate_key("EdDSA").public_jwk()]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    for source in (jwks, path, str(path), KeySet.import_key_set(jwks)):
        assert [key.kid for key in load_jwks(source)] == [jwk["kid"] for jwk in jwks["keys"]]


def test_load_jwks_refuses_secrets_and_garbage():
    with pytest.raises(ValueError, match="secret"):
        load_jwks({"keys": [generate_key().private_jwk()]})
    with pytest.raises(ValueError, match="secret"):
        load_jwks(
            {
                "keys": [
                    {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ", "kid": "h"}
                ]
            }
        )
    for garbage in ({}, {"keys": "x"}, {"keys": []}, {"keys": [{"kty": "EC"}]}):
        with pytest.raises(ValueError):
            load_jwks(garbage)


def test_verifier_refuses_symmetric_algorithms_and_duplicate_kids():
    jwks = {"keys": [generate_key().public_jwk()]}
    for algorithms in (["HS256"], ["ES256", "none"]):
        with pytest.raises(ValueError, match="public keys"):
            JwsVerifier(jwks, types=["JWT"], algorithms=algorithms)
    twins = {"keys": [generate_key(kid="k").public_jwk(), generate_key(kid="k").public_jwk()]}
    with pytest.raises(ValueError, match="two keys"):
        JwsVerifier(twins, types=["JWT"])


def test_verifier_ignores_encryption_keys():
    sig, enc = generate_key(kid="sig").public_jwk(), generate_key(kid="enc").public_jwk()
    enc["use"] = "enc"
    assert JwsVerifier({"keys": [sig, enc]}, types=["JWT"]).kids == ["sig"]


def test_signatures_of_each_algorithm_verify(any_key):
    verifier = JwsVerifier({"keys": [any_key.public_jwk()]}, types=["JWT"])
    header, payload = verifier.verify(any_key.sign(b"{}", typ="JWT"))
    assert header == {"alg": any_key.alg, "kid": any_key.kid, "typ": "JWT"}
    assert payload == b"{}"
