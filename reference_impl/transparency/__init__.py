"""The verifiable log: per-tenant RFC 9162 Merkle trees, signed checkpoints, witnesses, exports.

Each tenant's events are the leaves of a Merkle tree (leaf ``i`` is ``seq == i``), kept in
PostgreSQL as its perfect subtree hashes from 16 leaves up plus a frontier (lower subtrees
are hashed from the events when a proof needs them), and extended inside the ingest
transaction, so the tree never lags the chain. Checkpoints (C2SP tlog-checkpoint in a
signed note, Ed25519) are issued on a schedule and on demand and published to witnesses,
which accept a checkpoint only with a valid consistency proof from the last one they
accepted. Export bundles carry events, proofs, a checkpoint and the public keys, and verify
offline with `reference_impl.integrity` alone.
"""
