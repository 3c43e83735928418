"""HMAC-SHA256 signatures over chain hashes, key rotation and key ring hygiene."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from reference_impl.integrity import KeyRing, UnknownKeyError, chain_hash
from reference_impl.integrity.chain import GENESIS_HASH

OLD_SECRET = bytes.fromhex("aa" * 32)
NEW_SECRET = b"new-signing-secret-of-32-bytes!!"
HASH_A = chain_hash(GENESIS_HASH, 0, b'{"n":0}')
HASH_B = chain_hash(HASH_A, 1, b'{"n":1}')


def _hmac_sha256_by_definition(key: bytes, message: bytes) -> bytes:
    """RFC 2104 written out, so the expected value does not come from `hmac`."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def _ring() -> KeyRing:
    return KeyRing({"k-2024": OLD_SECRET, "k-2025": NEW_SECRET}, active_key_id="k-2024")


def test_sign_is_hmac_sha256_of_the_chain_hash_with_the_active_key() -> None:
    key_id, signature = _ring().sign(HASH_A)
    assert key_id == "k-2024"
    assert signature == _hmac_sha256_by_definition(OLD_SECRET, HASH_A)
    assert len(signature) == 32


def test_long_secret_is_hashed_first_as_in_rfc_2104() -> None:
    secret = bytes(range(100))
    ring = KeyRing({"long": secret}, active_key_id="long")
    assert ring.sign(HASH_A)[1] == _hmac_sha256_by_definition(secret, HASH_A)


def test_rotation_keeps_old_signatures_valid() -> None:
    ring = _ring()
    old_key, old_signature = ring.sign(HASH_A)
    rotated = ring.with_active("k-2025")
    new_key, new_signature = rotated.sign(HASH_B)

    assert (old_key, new_key) == ("k-2024", "k-2025")
    assert rotated.active_key_id == "k-2025"
    assert ring.active_key_id == "k-2024", "with_active must not change the original ring"
    for verifier in (ring, rotated):
        assert verifier.verify(old_key, HASH_A, old_signature)
        assert verifier.verify(new_key, HASH_B, new_signature)
    # A signature only verifies under the key that made it.
    assert not rotated.verify(new_key, HASH_A, old_signature)
    assert not rotated.verify(old_key, HASH_B, new_signature)


def test_retired_key_no_longer_verifies() -> None:
    old_key, old_signature = _ring().sign(HASH_A)
    retired = KeyRing({"k-2025": NEW_SECRET}, active_key_id="k-2025")
    assert not retired.verify(old_key, HASH_A, old_signature)


def test_unknown_key_id_fails() -> None:
    ring = _ring()
    _, signature = ring.sign(HASH_A)
    assert not ring.verify("k-1999", HASH_A, signature)
    assert not ring.verify("", HASH_A, signature)


@pytest.mark.parametrize("index", [0, 15, 31])
def test_tampered_signature_fails(index: int) -> None:
    ring = _ring()
    key_id, signature = ring.sign(HASH_A)
    tampered = bytearray(signature)
    tampered[index] ^= 0x01
    assert not ring.verify(key_id, HASH_A, bytes(tampered))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 31, b"\x00" * 33])
def test_signature_of_wrong_length_fails(signature: bytes) -> None:
    assert not _ring().verify("k-2024", HASH_A, signature)


def test_signature_for_another_hash_fails() -> None:
    ring = _ring()
    key_id, signature = ring.sign(HASH_A)
    assert not ring.verify(key_id, HASH_B, signature)


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ring = _ring()
    key_id, signature = ring.sign(HASH_A)
    assert ring.verify(key_id, HASH_A, signature)
    assert signature in calls[-1]


def test_sign_refuses_anything_but_a_chain_hash() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        _ring().sign(b'{"raw":"content"}')


def test_key_ids_and_membership() -> None:
    ring = _ring()
    assert ring.key_ids == ("k-2024", "k-2025")
    assert "k-2025" in ring
    assert "k-1999" not in ring


def test_unknown_active_key_is_refused() -> None:
    with pytest.raises(UnknownKeyError) as caught:
        KeyRing({"k-2024": OLD_SECRET}, active_key_id="k-2025")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == "active key 'k-2025' is not in the ring"
    with pytest.raises(UnknownKeyError):
        _ring().with_active("k-2026")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        KeyRing({"weak": b"x" * 31}, active_key_id="weak")


def test_empty_ring_and_empty_key_id_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing({}, active_key_id="k")
    with pytest.raises(ValueError, match="empty"):
        KeyRing({"": OLD_SECRET}, active_key_id="")


def test_secret_is_not_a_string() -> None:
    with pytest.raises(TypeError):
        KeyRing({"k": "a" * 32}, active_key_id="k")  # type: ignore[dict-item]


def test_ring_copies_mutable_secrets() -> None:
    secret = bytearray(OLD_SECRET)
    ring = KeyRing({"k": secret}, active_key_id="k")  # type: ignore[dict-item]
    _, before = ring.sign(HASH_A)
    secret[0] ^= 0xFF
    assert ring.sign(HASH_A)[1] == before


def test_repr_and_str_never_show_secrets() -> None:
    ring = _ring()
    for text in (repr(ring), str(ring)):
        assert "k-2024" in text
        for secret in (OLD_SECRET, NEW_SECRET):
            assert secret.hex() not in text
            assert repr(secret)[2:-1] not in text
            assert secret.decode("latin-1") not in text
