"""The per-tenant hash chain.

Each event's hash commits to the previous event's hash, to its own sequence
number and to its canonical bytes:
`hash = SHA-256(prev_hash ‖ seq ‖ canonical)`, with ``seq`` written as an 8-byte
big-endian unsigned integer.

The first event of a tenant links to [`GENESIS_HASH`][reference_impl.integrity.chain.GENESIS_HASH].
Both prefixes have a fixed width, so no two different ``(prev_hash, seq,
canonical)`` triples share a hash input, and binding ``seq`` into the hash is what
lets a verifier tell a renumbered row from a genuine one.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["GENESIS_HASH", "HASH_SIZE", "MAX_SEQ", "chain_hash"]

HASH_SIZE: Final = 32
"""Length in bytes of every chain hash (SHA-256)."""

GENESIS_HASH: Final = bytes(HASH_SIZE)
"""The ``prev_hash`` of seq 0: thirty-two zero bytes."""

MAX_SEQ: Final = 2**63 - 1
"""Largest sequence number; it matches a signed 64-bit ``BIGINT`` column."""


def chain_hash(prev_hash: bytes, seq: int, canonical: bytes) -> bytes:
    """Compute the chain hash of one event.

    Args:
        prev_hash: Hash of the event at ``seq - 1``, or ``GENESIS_HASH`` for seq 0.
        seq: The event's per-tenant sequence number, ``0 <= seq <= MAX_SEQ``.
        canonical: The event's stored RFC 8785 canonical bytes.

    Returns:
        The 32-byte SHA-256 digest.

    Raises:
        TypeError: If ``seq`` is not an ``int`` (``bool`` included, since
            ``True`` would silently hash as seq 1).
        ValueError: If ``prev_hash`` is not 32 bytes or ``seq`` is out of range.
    """
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"seq must be an int, not {type(seq).__name__}")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} is outside 0..2**63-1")
    if len(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes, got {len(prev_hash)}")
    digest = hashlib.sha256(prev_hash)
    digest.update(seq.to_bytes(8, "big"))
    digest.update(canonical)
    return digest.digest()
