"""The first call of an ingest transaction: declare its tenants, lock their heads, read.

The batch needs its tenants' chain heads locked (writers of a tenant are serialised by
PostgreSQL across every process), the index entries already stored under its event ids (a
retry gets its first receipt back) and the tenants' Merkle frontiers (the tree grows from
them). The database function `auditkit_open_batch` (migration 0006) does all of it in one
round trip: under load every round trip waits for a busy event loop, and the two that came
after the lock were spent while every other writer of these tenants waited.

The read still happens after the lock, in a statement of its own inside the function: in
READ COMMITTED a statement reads the data of the moment it started, and the lock statement
starts before it waits for the previous holder, whose events it would then not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from reference_impl.events.repository import IndexEntry
from reference_impl.integrity import ChainHead
from reference_impl.transparency.repository import Frontier

__all__ = ["BatchState", "open_batch", "stored_leaves"]

_OPEN_BATCH = "SELECT * FROM auditkit_open_batch($1::text[], $2::text[], $3::uuid[])"
_STORED_LEAVES = (
    "SELECT seq, canonical FROM audit_events"
    " WHERE tenant_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq"
)


@dataclass(frozen=True, slots=True)
class BatchState:
    """The locked chain heads, the stored entries of the batch's event ids, the frontiers."""

    heads: dict[str, ChainHead]
    existing: dict[tuple[str, UUID], IndexEntry]
    frontiers: dict[str, Frontier]


# --8<-- [start:open-batch]
async def open_batch(
    driver: asyncpg.Connection, tenants: Sequence[str], keys: Sequence[tuple[str, UUID]]
) -> BatchState:
    """Scope the transaction to ``tenants``, lock their heads, read what the batch needs.

    ``driver`` is an asyncpg connection in a transaction (`core.db.driver_transaction`);
    ``keys`` are the batch's `(tenant, event_id)` pairs. Heads are locked in tenant order,
    so two transactions never wait on each other's locks. A tenant without a head row is
    missing from `heads`.
    """
    rows = await driver.fetch(
        _OPEN_BATCH,
        sorted(tenants),
        [tenant for tenant, _ in keys],
        [event_id for _, event_id in keys],
    )
    heads: dict[str, ChainHead] = {}
    existing: dict[tuple[str, UUID], IndexEntry] = {}
    frontiers: dict[str, Frontier] = {}
    for kind, tenant, event_id, seq, recorded_at, digest, hash_, key_id, size, frontier in rows:
        if kind == "h":
            heads[tenant] = ChainHead(next_seq=seq, head_hash=bytes(hash_))
        elif kind == "f":
            frontiers[tenant] = Frontier(size, tuple(frontier))
        else:
            existing[(tenant, event_id)] = IndexEntry(
                tenant_id=tenant,
                event_id=event_id,
                seq=seq,
                recorded_at=recorded_at,
                content_digest=digest,
                hash=hash_,
                key_id=key_id,
            )
    return BatchState(heads, existing, frontiers)


# --8<-- [end:open-batch]


async def stored_leaves(
    driver: asyncpg.Connection, tenant: str, start: int, end: int
) -> list[tuple[int, bytes]]:
    """``(seq, canonical)`` of ``tenant``'s stored events with ``start <= seq < end``.

    What the Merkle tree lacks when the database was upgraded from before it existed.
    """
    rows = await driver.fetch(_STORED_LEAVES, tenant, start, end)
    return [(seq, bytes(canonical)) for seq, canonical in rows]
