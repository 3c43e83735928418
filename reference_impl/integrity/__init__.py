"""Integrity primitives: canonical bytes, the hash chain, signatures, verification.

The verifiable log's primitives live in submodules: `merkle` (the RFC 9162 tree and its
proofs), `checkpoint` (C2SP signed notes and tlog-checkpoints, Ed25519), `witness` (the
witness's decision) and `bundle` (offline verification of export bundles).

This package takes bytes and keys only. It imports no web framework, database or
settings, so an offline verifier needs nothing but this package and a copy of
the rows.
"""

from reference_impl.integrity.canonical import (
    CanonicalizationError,
    canonical_digest,
    canonicalize,
)
from reference_impl.integrity.chain import GENESIS_HASH, HASH_SIZE, MAX_SEQ, chain_hash
from reference_impl.integrity.signing import MIN_SECRET_SIZE, KeyRing, UnknownKeyError
from reference_impl.integrity.verify import (
    DEFAULT_WINDOW,
    ChainHead,
    ChainRecord,
    ChainVerifier,
    TamperKind,
    VerificationResult,
    verify_chain,
    verify_chain_async,
)

__all__ = [
    "DEFAULT_WINDOW",
    "GENESIS_HASH",
    "HASH_SIZE",
    "MAX_SEQ",
    "MIN_SECRET_SIZE",
    "CanonicalizationError",
    "ChainHead",
    "ChainRecord",
    "ChainVerifier",
    "KeyRing",
    "TamperKind",
    "UnknownKeyError",
    "VerificationResult",
    "canonical_digest",
    "canonicalize",
    "chain_hash",
    "verify_chain",
    "verify_chain_async",
]
