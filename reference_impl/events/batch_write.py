"""Everything one ingest transaction writes, sent as one call.

Under load an API process's event loop is busy with requests, so every `await` inside the
ingest transaction waits for the loop to come round again, while the transaction holds its
tenants' chain-head locks and writers in other processes wait for them. The rows are all
known once the batch is planned, so they go in one statement of data-modifying CTEs instead
of four: the events and their index rows, the Merkle subtrees the new leaves complete, the
moved frontiers and the moved chain heads. PostgreSQL runs every part of the statement or
none, and a constraint broken by any row fails the whole statement as the separate
statements did. The statement runs inside `auditkit_write_batch`, planned once per
connection (see migration 0007).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from reference_impl.events.staging import EventRows
from reference_impl.integrity import ChainHead
from reference_impl.transparency.repository import Frontier

__all__ = ["write_batch"]

HASH_BYTES = 32

# The statement lives in the database function `auditkit_write_batch` (migration 0007),
# which keeps its plan for the connection's life and cannot keep a plan that scans. A
# frontier is a variable-length list of hashes; sent as one bytea of concatenated 32-byte
# hashes per tenant, because PostgreSQL arrays of arrays must be rectangular. Every row of a
# transaction has the same `recorded_at`, sent once ($3): encoding a timestamp costs the
# driver as much as encoding six short strings.
_WRITE_BATCH = "SELECT auditkit_write_batch({})".format(", ".join(f"${i}" for i in range(1, 28)))


# --8<-- [start:write-batch]
async def write_batch(
    driver: asyncpg.Connection,
    rows: EventRows,
    nodes: list[tuple[str, int, int, bytes]],
    frontiers: dict[str, Frontier],
    heads: dict[str, ChainHead],
) -> None:
    """Insert events, index rows and Merkle nodes; move frontiers and heads: one statement.

    ``driver`` is the asyncpg connection of the ingest transaction
    (`core.db.driver_transaction`).

    Raises:
        ValueError: A frontier hash is not 32 bytes.
    """
    if not rows:
        return
    (tenant, event_id, occurred_at, action, category, outcome, classification, principal,
     subject, digest) = zip(*rows.staged, strict=True)  # fmt: skip
    columns: list[Any] = [
        tenant,
        rows.seq,
        rows.recorded_at,
        event_id,
        occurred_at,
        action,
        category,
        outcome,
        classification,
        principal,
        subject,
        rows.canonical,
        rows.prev_hash,
        rows.hash,
        rows.key_id,
        rows.signature,
        digest,
    ]
    columns += [list(part) for part in zip(*nodes, strict=True)] if nodes else [[]] * 4
    tenants = sorted(frontiers)
    if any(len(h) != HASH_BYTES for t in tenants for h in frontiers[t].hashes):
        raise ValueError(f"frontier hashes must be {HASH_BYTES} bytes")
    columns += [
        tenants,
        [frontiers[t].size for t in tenants],
        [b"".join(frontiers[t].hashes) for t in tenants],
    ]
    moved = sorted(heads)
    columns += [moved, [heads[t].next_seq for t in moved], [heads[t].head_hash for t in moved]]
    await driver.execute(_WRITE_BATCH, *columns)


# --8<-- [end:write-batch]
