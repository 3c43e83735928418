"""The chain hash layout: SHA-256(prev_hash ‖ seq as 8-byte big-endian ‖ canonical)."""

from __future__ import annotations

import hashlib

import pytest

from reference_impl.integrity import GENESIS_HASH, MAX_SEQ, chain_hash

PREV = bytes(range(32))
CANONICAL = b'{"action":"fhir.patient.read"}'


def test_genesis_hash_is_32_zero_bytes() -> None:
    assert GENESIS_HASH == b"\x00" * 32


def test_layout_is_prev_then_big_endian_seq_then_canonical() -> None:
    seq = 0x0102030405060708
    message = PREV + b"\x01\x02\x03\x04\x05\x06\x07\x08" + CANONICAL
    assert chain_hash(PREV, seq, CANONICAL) == hashlib.sha256(message).digest()


@pytest.mark.parametrize(
    ("seq", "encoded"),
    [
        (0, b"\x00" * 8),
        (1, b"\x00" * 7 + b"\x01"),
        (256, b"\x00" * 6 + b"\x01\x00"),
        (MAX_SEQ, b"\x7f" + b"\xff" * 7),
    ],
)
def test_seq_is_eight_bytes_big_endian(seq: int, encoded: bytes) -> None:
    expected = hashlib.sha256(GENESIS_HASH + encoded + CANONICAL).digest()
    assert chain_hash(GENESIS_HASH, seq, CANONICAL) == expected


def test_every_input_changes_the_hash() -> None:
    base = chain_hash(PREV, 5, CANONICAL)
    assert len(base) == 32
    assert chain_hash(GENESIS_HASH, 5, CANONICAL) != base
    assert chain_hash(PREV, 6, CANONICAL) != base
    assert chain_hash(PREV, 5, CANONICAL + b" ") != base


def test_empty_canonical_is_hashed_as_is() -> None:
    assert chain_hash(PREV, 0, b"") == hashlib.sha256(PREV + bytes(8)).digest()


@pytest.mark.parametrize("prev_hash", [b"", bytes(31), bytes(33)])
def test_rejects_prev_hash_of_wrong_length(prev_hash: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        chain_hash(prev_hash, 0, CANONICAL)


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1, 2**64])
def test_rejects_seq_out_of_range(seq: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        chain_hash(PREV, seq, CANONICAL)


@pytest.mark.parametrize("seq", [True, 1.0, "1"])
def test_rejects_seq_that_is_not_an_int(seq: object) -> None:
    with pytest.raises(TypeError):
        chain_hash(PREV, seq, CANONICAL)  # type: ignore[arg-type]
