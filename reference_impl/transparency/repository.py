"""Every query of the verifiable log. Bound parameters only; no SQL is built from strings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from reference_impl.events.models import AuditEvent, AuditEventIndex, ChainHeadRow
from reference_impl.transparency.models import (
    CheckpointKeyRow,
    CheckpointRow,
    MerkleFrontier,
    MerkleNode,
    WitnessState,
)

__all__ = [
    "Frontier",
    "StoredCheckpoint",
    "StoredKey",
    "WitnessRecord",
    "checkpoint_at",
    "event_seq",
    "insert_checkpoint",
    "insert_nodes",
    "latest_checkpoint",
    "leaf_inputs",
    "leaves_at",
    "list_checkpoints",
    "list_keys",
    "load_frontiers",
    "read_nodes",
    "record_witness",
    "register_key",
    "save_frontiers",
    "seq_range",
    "stream_export",
    "stream_leaves",
    "tenants_due",
    "tree_lag",
    "tree_size",
    "try_lock_checkpointing",
    "unlock_checkpointing",
    "witness_records",
]

NODES = cast(Table, MerkleNode.__table__)
FRONTIERS = cast(Table, MerkleFrontier.__table__)
CHECKPOINTS = cast(Table, CheckpointRow.__table__)
KEYS = cast(Table, CheckpointKeyRow.__table__)
WITNESSES = cast(Table, WitnessState.__table__)
EVENTS = cast(Table, AuditEvent.__table__)
INDEX = cast(Table, AuditEventIndex.__table__)
HEADS = cast(Table, ChainHeadRow.__table__)

_LOCK_KEY = "auditkit.checkpoints"


@dataclass(frozen=True, slots=True)
class Frontier:
    """A tenant's tree size and right-edge subtree roots, largest first."""

    size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as stored."""

    tenant: str
    tree_size: int
    root_hash: bytes
    note: str
    key_name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A checkpoint key that signed at least one checkpoint (or is configured)."""

    key_name: str
    public_key: bytes
    vkey: str
    first_used_at: datetime


@dataclass(frozen=True, slots=True)
class WitnessRecord:
    """What a witness last accepted for a tenant, and its last answer."""

    witness: str
    tree_size: int
    accepted_at: datetime | None
    last_attempt_at: datetime
    last_outcome: str
    last_reason: str


# -- the tree --------------------------------------------------------------------------


async def load_frontiers(conn: AsyncConnection, tenants: Sequence[str]) -> dict[str, Frontier]:
    """The frontier of each tenant that has one (callers hold the tenants' chain heads)."""
    rows = await conn.execute(
        select(FRONTIERS.c.tenant_id, FRONTIERS.c.tree_size, FRONTIERS.c.frontier).where(
            FRONTIERS.c.tenant_id.in_(list(tenants))
        )
    )
    return {r.tenant_id: Frontier(r.tree_size, tuple(bytes(h) for h in r.frontier)) for r in rows}


async def save_frontiers(conn: AsyncConnection, frontiers: dict[str, Frontier]) -> None:
    """Insert or move forward the tenants' frontiers."""
    if not frontiers:
        return
    stmt = insert(FRONTIERS)
    stmt = stmt.on_conflict_do_update(
        index_elements=[FRONTIERS.c.tenant_id],
        set_={
            "tree_size": stmt.excluded.tree_size,
            "frontier": stmt.excluded.frontier,
            "updated_at": func.now(),
        },
    )
    await conn.execute(
        stmt,
        [
            {"tenant_id": t, "tree_size": f.size, "frontier": list(f.hashes)}
            for t, f in sorted(frontiers.items())
        ],
    )


async def insert_nodes(conn: AsyncConnection, nodes: Sequence[tuple[str, int, int, bytes]]) -> None:
    """Insert new perfect subtree hashes ``(tenant, level, index, hash)`` in one statement."""
    if not nodes:
        return
    stmt = text(
        "INSERT INTO merkle_nodes (tenant_id, level, idx, hash)"
        " SELECT * FROM unnest(CAST(:tenants AS text[]), CAST(:levels AS smallint[]),"
        " CAST(:idxs AS bigint[]), CAST(:hashes AS bytea[]))"
    ).bindparams(
        bindparam("tenants", type_=ARRAY(Text)),
        bindparam("levels", type_=ARRAY(SmallInteger)),
        bindparam("idxs", type_=ARRAY(BigInteger)),
        bindparam("hashes", type_=ARRAY(LargeBinary)),
    )
    tenants, levels, idxs, hashes = zip(*nodes, strict=True)
    await conn.execute(
        stmt,
        {
            "tenants": list(tenants),
            "levels": list(levels),
            "idxs": list(idxs),
            "hashes": list(hashes),
        },
    )


async def read_nodes(
    conn: AsyncConnection, tenant: str, wanted: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the wanted ``(level, index)`` subtrees, in one query."""
    if not wanted:
        return {}
    stmt = text(
        "SELECT n.level, n.idx, n.hash FROM merkle_nodes AS n"
        " JOIN unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) AS w(level, idx)"
        " ON n.level = w.level AND n.idx = w.idx WHERE n.tenant_id = :tenant"
    ).bindparams(
        bindparam("levels", type_=ARRAY(SmallInteger)),
        bindparam("idxs", type_=ARRAY(BigInteger)),
    )
    rows = await conn.execute(
        stmt,
        {"tenant": tenant, "levels": [w[0] for w in wanted], "idxs": [w[1] for w in wanted]},
    )
    return {(r.level, r.idx): bytes(r.hash) for r in rows}


async def leaf_inputs(
    conn: AsyncConnection, tenant: str, start: int, end: int
) -> list[tuple[int, bytes]]:
    """``(seq, canonical)`` of the stored events with ``start <= seq < end``, in seq order."""
    rows = await conn.execute(
        select(EVENTS.c.seq, EVENTS.c.canonical)
        .where(EVENTS.c.tenant_id == tenant, EVENTS.c.seq >= start, EVENTS.c.seq < end)
        .order_by(EVENTS.c.seq)
    )
    return [(r.seq, bytes(r.canonical)) for r in rows]


async def leaves_at(conn: AsyncConnection, tenant: str, seqs: Sequence[int]) -> dict[int, bytes]:
    """The canonical bytes of ``tenant``'s stored events at ``seqs``, by seq (one query)."""
    if not seqs:
        return {}
    rows = await conn.execute(
        select(EVENTS.c.seq, EVENTS.c.canonical).where(
            EVENTS.c.tenant_id == tenant,
            EVENTS.c.seq == func.any(bindparam("seqs", list(seqs), type_=ARRAY(BigInteger))),
        )
    )
    return {r.seq: bytes(r.canonical) for r in rows}


async def tree_size(conn: AsyncConnection, tenant: str) -> int:
    """The number of leaves in ``tenant``'s tree (0 before its first event)."""
    result = await conn.execute(
        select(FRONTIERS.c.tree_size).where(FRONTIERS.c.tenant_id == tenant)
    )
    return int(result.scalar_one_or_none() or 0)


async def tree_lag(conn: AsyncConnection) -> int:
    """The largest number of events any tenant's tree is behind its chain (0 by design)."""
    result = await conn.execute(
        text(
            "SELECT coalesce(max(h.next_seq - coalesce(f.tree_size, 0)), 0)"
            " FROM chain_heads AS h LEFT JOIN merkle_frontiers AS f USING (tenant_id)"
        )
    )
    return int(result.scalar_one())


async def event_seq(conn: AsyncConnection, tenant: str, event_id: UUID) -> int | None:
    """The seq (leaf index) of an event of ``tenant``, or None."""
    result = await conn.execute(
        select(INDEX.c.seq).where(INDEX.c.tenant_id == tenant, INDEX.c.event_id == event_id)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


# -- checkpoints -----------------------------------------------------------------------


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(
        tenant=row.tenant_id,
        tree_size=row.tree_size,
        root_hash=bytes(row.root_hash),
        note=row.note,
        key_name=row.key_name,
        created_at=row.created_at,
    )


async def latest_checkpoint(conn: AsyncConnection, tenant: str) -> StoredCheckpoint | None:
    """The checkpoint of ``tenant`` with the largest tree size, if any."""
    row = (
        await conn.execute(
            select(CHECKPOINTS)
            .where(CHECKPOINTS.c.tenant_id == tenant)
            .order_by(CHECKPOINTS.c.tree_size.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _checkpoint(row)


async def checkpoint_at(conn: AsyncConnection, tenant: str, size: int) -> StoredCheckpoint | None:
    """The checkpoint of ``tenant`` at exactly ``size``, if one was issued."""
    row = (
        await conn.execute(
            select(CHECKPOINTS).where(
                CHECKPOINTS.c.tenant_id == tenant, CHECKPOINTS.c.tree_size == size
            )
        )
    ).first()
    return None if row is None else _checkpoint(row)


async def list_checkpoints(
    conn: AsyncConnection, tenant: str, *, limit: int = 100
) -> list[StoredCheckpoint]:
    """The newest checkpoints of ``tenant``, newest first."""
    rows = await conn.execute(
        select(CHECKPOINTS)
        .where(CHECKPOINTS.c.tenant_id == tenant)
        .order_by(CHECKPOINTS.c.tree_size.desc())
        .limit(limit)
    )
    return [_checkpoint(r) for r in rows]


async def insert_checkpoint(
    conn: AsyncConnection, tenant: str, size: int, root_hash: bytes, note: str, key_name: str
) -> StoredCheckpoint | None:
    """Store a signed checkpoint; None if one at that size is stored already (a race)."""
    stmt = (
        insert(CHECKPOINTS)
        .values(tenant_id=tenant, tree_size=size, root_hash=root_hash, note=note, key_name=key_name)
        .on_conflict_do_nothing(index_elements=[CHECKPOINTS.c.tenant_id, CHECKPOINTS.c.tree_size])
        .returning(*CHECKPOINTS.c)
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else _checkpoint(row)


async def tenants_due(conn: AsyncConnection) -> list[str]:
    """Tenants with events since their latest checkpoint (needs the platform scope).

    Measured on the chain, not the tree, so that a tenant whose events predate the tree
    is found too (its checkpoint catches the tree up).
    """
    rows = await conn.execute(
        text(
            "SELECT h.tenant_id FROM chain_heads AS h"
            " WHERE h.next_seq > coalesce("
            "   (SELECT max(c.tree_size) FROM checkpoints AS c WHERE c.tenant_id = h.tenant_id),"
            "   0)"
            " ORDER BY h.tenant_id"
        )
    )
    return [r.tenant_id for r in rows]


async def try_lock_checkpointing(conn: AsyncConnection) -> bool:
    """Take the advisory lock that makes one replica at a time issue scheduled checkpoints."""
    result = await conn.execute(
        text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": _LOCK_KEY}
    )
    return bool(result.scalar_one())


async def unlock_checkpointing(conn: AsyncConnection) -> None:
    """Release the scheduled-checkpoint lock."""
    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": _LOCK_KEY})


# -- keys ------------------------------------------------------------------------------


def _key(row: Any) -> StoredKey:
    return StoredKey(row.key_name, bytes(row.public_key), row.vkey, row.first_used_at)


async def register_key(
    conn: AsyncConnection, key_name: str, public_key: bytes, vkey: str
) -> StoredKey:
    """Record a checkpoint key (once); returns the row stored under that name.

    The caller compares the returned public key with its own: a name reused for another
    key must never be published as the same key.
    """
    stmt = insert(KEYS).values(key_name=key_name, public_key=public_key, vkey=vkey)
    await conn.execute(stmt.on_conflict_do_nothing())
    row = (await conn.execute(select(KEYS).where(KEYS.c.key_name == key_name))).one()
    return _key(row)


async def list_keys(conn: AsyncConnection) -> list[StoredKey]:
    """Every checkpoint key recorded, oldest first."""
    rows = await conn.execute(select(KEYS).order_by(KEYS.c.first_used_at, KEYS.c.key_name))
    return [_key(r) for r in rows]


# -- witnesses -------------------------------------------------------------------------


async def witness_records(conn: AsyncConnection, tenant: str) -> dict[str, WitnessRecord]:
    """What each witness last accepted for ``tenant``."""
    rows = await conn.execute(select(WITNESSES).where(WITNESSES.c.tenant_id == tenant))
    return {
        r.witness: WitnessRecord(
            r.witness,
            r.tree_size,
            r.accepted_at,
            r.last_attempt_at,
            r.last_outcome,
            r.last_reason,
        )
        for r in rows
    }


async def record_witness(
    conn: AsyncConnection,
    tenant: str,
    witness: str,
    *,
    outcome: str,
    reason: str,
    accepted_size: int | None,
) -> None:
    """Record a witness's answer; ``accepted_size`` moves its accepted size (None: kept)."""
    stmt = insert(WITNESSES).values(
        tenant_id=tenant,
        witness=witness,
        tree_size=accepted_size or 0,
        accepted_at=func.now() if accepted_size is not None else None,
        last_attempt_at=func.now(),
        last_outcome=outcome,
        last_reason=reason,
    )
    update: dict[str, Any] = {
        "last_attempt_at": func.now(),
        "last_outcome": stmt.excluded.last_outcome,
        "last_reason": stmt.excluded.last_reason,
    }
    if accepted_size is not None:
        update["tree_size"] = stmt.excluded.tree_size
        update["accepted_at"] = func.now()
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[WITNESSES.c.tenant_id, WITNESSES.c.witness], set_=update
        )
    )


# -- export ----------------------------------------------------------------------------


async def seq_range(
    conn: AsyncConnection, tenant: str, start: datetime, end: datetime
) -> tuple[int, int] | None:
    """First and last seq of ``tenant`` recorded in ``[start, end)``, or None if none."""
    row = (
        await conn.execute(
            select(func.min(INDEX.c.seq), func.max(INDEX.c.seq)).where(
                INDEX.c.tenant_id == tenant,
                INDEX.c.recorded_at >= start,
                INDEX.c.recorded_at < end,
            )
        )
    ).one()
    if row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def stream_export(
    conn: AsyncConnection, tenant: str, first: int, last: int, *, chunk: int = 1000
) -> AsyncIterator[Any]:
    """Events ``first..last`` of ``tenant`` with their chain fields, in seq order."""
    stmt = (
        select(
            EVENTS.c.seq,
            EVENTS.c.event_id,
            EVENTS.c.canonical,
            EVENTS.c.prev_hash,
            EVENTS.c.hash,
        )
        .where(EVENTS.c.tenant_id == tenant, EVENTS.c.seq >= first, EVENTS.c.seq <= last)
        .order_by(EVENTS.c.seq)
    )
    result = await conn.stream(stmt.execution_options(yield_per=chunk))
    async for row in result:
        yield row


async def stream_leaves(
    conn: AsyncConnection, tenant: str, *, chunk: int = 2000
) -> AsyncIterator[tuple[int, bytes]]:
    """``(seq, canonical)`` of every stored event of ``tenant``, in seq order."""
    stmt = (
        select(EVENTS.c.seq, EVENTS.c.canonical)
        .where(EVENTS.c.tenant_id == tenant)
        .order_by(EVENTS.c.seq)
    )
    result = await conn.stream(stmt.execution_options(yield_per=chunk))
    async for row in result:
        yield row.seq, bytes(row.canonical)
