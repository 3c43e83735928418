"""Every query of the events domain. Bound parameters only; no SQL is built from strings."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import (
    Select,
    Table,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from reference_impl.core.errors import ProblemField, ValidationFailedError
from reference_impl.events.models import (
    AuditEvent,
    AuditEventIndex,
    ChainHeadRow,
    TenantIntegrity,
)
from reference_impl.integrity import GENESIS_HASH, ChainHead

__all__ = [
    "EVENT_FIELDS",
    "EventFilter",
    "IndexEntry",
    "chain_head",
    "ensure_partitions",
    "ensure_tenants",
    "get_event",
    "list_tenants",
    "lock_heads",
    "search",
    "stream_chain",
    "stream_events",
]

EVENTS = cast(Table, AuditEvent.__table__)
INDEX = cast(Table, AuditEventIndex.__table__)
HEADS = cast(Table, ChainHeadRow.__table__)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """The unique-key row of a stored event, enough to answer an idempotent retry."""

    tenant_id: str
    event_id: UUID
    seq: int
    recorded_at: datetime
    content_digest: bytes
    hash: bytes
    key_id: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Query filters; every one is optional and they combine with AND."""

    start: datetime | None = None
    end: datetime | None = None
    principal_id: str | None = None
    subject_id: str | None = None
    action_prefix: str | None = None
    outcome: str | None = None
    category: str | None = None
    data_classification: str | None = None

    def as_details(self) -> dict[str, str]:
        """The filters that are set, as text (for the access record)."""
        return {
            k: str(v)
            for k, v in zip(self.__dataclass_fields__, astuple(self), strict=True)
            if v is not None
        }

    def fingerprint(self) -> str:
        """A short digest binding a cursor to the filters it was issued for."""
        raw = orjson.dumps([None if v is None else str(v) for v in astuple(self)])
        return hashlib.sha256(raw).hexdigest()[:12]


# -- ingest ------------------------------------------------------------------------------


async def ensure_tenants(conn: AsyncConnection, tenants: Sequence[str]) -> None:
    """Create missing chain heads (in their own short transaction, before the batch's).

    Kept apart from the batch so that the batch only ever locks existing rows, in tenant
    order: two batches cannot deadlock on each other's freshly inserted heads.
    """
    stmt = text(
        "INSERT INTO chain_heads (tenant_id, next_seq, head_hash)"
        " SELECT t, 0, :genesis FROM unnest(CAST(:tenants AS text[])) AS t ORDER BY t"
        " ON CONFLICT (tenant_id) DO NOTHING"
    )
    await conn.execute(stmt, {"tenants": sorted(tenants), "genesis": GENESIS_HASH})


# The ingest transaction runs its fixed statements on the asyncpg connection itself
# (`core.db.driver_connection`): there is nothing for SQLAlchemy to compile, asyncpg keeps
# them prepared per connection, and rows travel as one array per column (`unnest`): one
# statement however many rows there are. The committer maps asyncpg's errors itself.

_LOCK_HEADS = (
    "SELECT tenant_id, next_seq, head_hash FROM chain_heads"
    " WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id FOR UPDATE"
)


async def lock_heads(driver: asyncpg.Connection, tenants: Sequence[str]) -> dict[str, ChainHead]:
    """Lock the tenants' chain heads in tenant order and return them.

    ``driver`` is the asyncpg connection of a transaction (`core.db.driver_connection`).
    """
    rows = await driver.fetch(_LOCK_HEADS, sorted(tenants))
    return {r[0]: ChainHead(next_seq=r[1], head_hash=bytes(r[2])) for r in rows}


# The event row's fields, in the order `batch_write` sends them as arrays.
EVENT_FIELDS = (
    "tenant_id",
    "seq",
    "recorded_at",
    "event_id",
    "occurred_at",
    "action",
    "category",
    "outcome",
    "data_classification",
    "principal_id",
    "subject_id",
    "canonical",
    "prev_hash",
    "hash",
    "key_id",
    "signature",
)


async def ensure_partitions(conn: AsyncConnection, months_ahead: int) -> int:
    """Create the monthly partitions of `audit_events` up to ``months_ahead``."""
    result = await conn.execute(text("SELECT audit_ensure_partitions(:n)"), {"n": months_ahead})
    return int(result.scalar_one())


# -- read ----------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    EVENTS.c.seq,
    EVENTS.c.canonical,
    EVENTS.c.prev_hash,
    EVENTS.c.hash,
    EVENTS.c.key_id,
    EVENTS.c.signature,
)


def render_event(row: Any) -> dict[str, Any]:
    """The API shape of a stored event: its canonical content plus chain fields."""
    out: dict[str, Any] = orjson.loads(row.canonical)
    out["seq"] = row.seq
    out["prev_hash"] = bytes(row.prev_hash).hex()
    out["hash"] = bytes(row.hash).hex()
    out["key_id"] = row.key_id
    out["signature"] = base64.b64encode(bytes(row.signature)).decode()
    return out


async def get_event(conn: AsyncConnection, tenant: str, event_id: UUID) -> dict[str, Any] | None:
    """One event of ``tenant`` by its `event_id`, or None."""
    key = (
        select(INDEX.c.seq, INDEX.c.recorded_at)
        .where(INDEX.c.tenant_id == tenant, INDEX.c.event_id == event_id)
        .subquery()
    )
    stmt = (
        select(*_EVENT_COLUMNS)
        .join(key, (EVENTS.c.seq == key.c.seq) & (EVENTS.c.recorded_at == key.c.recorded_at))
        .where(EVENTS.c.tenant_id == tenant)
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else render_event(row)


def _filtered(tenant: str, flt: EventFilter) -> Select[Any]:
    stmt = select(*_EVENT_COLUMNS).where(EVENTS.c.tenant_id == tenant)
    if flt.start is not None:
        stmt = stmt.where(EVENTS.c.occurred_at >= flt.start)
    if flt.end is not None:
        stmt = stmt.where(EVENTS.c.occurred_at < flt.end)
    if flt.principal_id is not None:
        stmt = stmt.where(EVENTS.c.principal_id == flt.principal_id)
    if flt.subject_id is not None:
        stmt = stmt.where(EVENTS.c.subject_id == flt.subject_id)
    if flt.action_prefix is not None:
        stmt = stmt.where(EVENTS.c.action.startswith(flt.action_prefix, autoescape=True))
    if flt.outcome is not None:
        stmt = stmt.where(EVENTS.c.outcome == flt.outcome)
    if flt.category is not None:
        stmt = stmt.where(EVENTS.c.category == flt.category)
    if flt.data_classification is not None:
        stmt = stmt.where(EVENTS.c.data_classification == flt.data_classification)
    return stmt


def encode_cursor(seq: int, order: str, flt: EventFilter) -> str:
    """An opaque keyset cursor: the last seq seen, the order and the filters' fingerprint."""
    raw = orjson.dumps({"s": seq, "o": order, "f": flt.fingerprint()})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: str, flt: EventFilter) -> int:
    """The seq a cursor continues after; a 422 problem if it is malformed or mismatched."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        seq = int(data["s"])
        same = data["o"] == order and data["f"] == flt.fingerprint()
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        same, seq = False, -1
    if not same or seq < 0:
        raise ValidationFailedError(
            [ProblemField("not a cursor issued for these filters and order", parameter="cursor")]
        )
    return seq


async def search(
    conn: AsyncConnection,
    tenant: str,
    flt: EventFilter,
    *,
    limit: int,
    order: str,
    after_seq: int | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of events by keyset pagination on `seq`.

    Returns the page and the seq to continue after (None on the last page). Keyset paging
    on the gapless per-tenant `seq` is stable under concurrent inserts: new events get
    higher seqs, so they never shift the pages a reader is walking.
    """
    stmt = _filtered(tenant, flt)
    if order == "desc":
        if after_seq is not None:
            stmt = stmt.where(EVENTS.c.seq < after_seq)
        stmt = stmt.order_by(EVENTS.c.seq.desc())
    else:
        if after_seq is not None:
            stmt = stmt.where(EVENTS.c.seq > after_seq)
        stmt = stmt.order_by(EVENTS.c.seq.asc())
    rows = (await conn.execute(stmt.limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [render_event(r) for r in rows], (rows[-1].seq if more and rows else None)


async def stream_events(
    conn: AsyncConnection, tenant: str, flt: EventFilter, *, chunk: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every matching event in seq order, read through a server-side cursor."""
    stmt = _filtered(tenant, flt).order_by(EVENTS.c.seq.asc())
    result = await conn.stream(stmt.execution_options(yield_per=chunk))
    async for row in result:
        yield render_event(row)


async def stream_chain(
    conn: AsyncConnection, tenant: str, *, chunk: int = 2000
) -> AsyncIterator[Any]:
    """Every stored row of ``tenant`` for verification, in stored `seq` order.

    Rows are ordered by `seq`, then `recorded_at`, then physical position, so that a
    duplicated seq shows up next to its twin.
    """
    stmt = (
        select(
            *_EVENT_COLUMNS,
            EVENTS.c.event_id,
            EVENTS.c.recorded_at,
            EVENTS.c.occurred_at,
            EVENTS.c.action,
            EVENTS.c.category,
            EVENTS.c.outcome,
            EVENTS.c.data_classification,
            EVENTS.c.principal_id,
            EVENTS.c.subject_id,
            EVENTS.c.tenant_id,
        )
        .where(EVENTS.c.tenant_id == tenant)
        .order_by(EVENTS.c.seq, EVENTS.c.recorded_at, literal_column("audit_events.ctid"))
    )
    result = await conn.stream(stmt.execution_options(yield_per=chunk))
    async for row in result:
        yield row


async def chain_head(conn: AsyncConnection, tenant: str) -> ChainHead | None:
    """The stored chain head of ``tenant`` (None for a tenant with no events)."""
    row = (
        await conn.execute(
            select(HEADS.c.next_seq, HEADS.c.head_hash).where(HEADS.c.tenant_id == tenant)
        )
    ).first()
    return None if row is None else ChainHead(next_seq=row.next_seq, head_hash=bytes(row.head_hash))


async def list_tenants(conn: AsyncConnection) -> list[str]:
    """Every tenant that has a chain."""
    rows = await conn.execute(select(HEADS.c.tenant_id).order_by(HEADS.c.tenant_id))
    return [r.tenant_id for r in rows]


async def count_events(conn: AsyncConnection, tenant: str) -> int:
    """Number of stored rows of ``tenant`` (for progress bars)."""
    result = await conn.execute(
        select(func.count()).select_from(EVENTS).where(EVENTS.c.tenant_id == tenant)
    )
    return int(result.scalar_one())


# -- integrity status ----------------------------------------------------------------------

STATUS = cast(Table, TenantIntegrity.__table__)


@dataclass(frozen=True, slots=True)
class CompromisedMark:
    """Where and how a tenant's chain was found broken."""

    tenant: str
    at: datetime
    seq: int | None
    kind: str | None
    detail: str | None


async def record_verified(conn: AsyncConnection, tenant: str, checked: int) -> None:
    """Note a successful verification of ``tenant`` up to ``checked`` events."""
    stmt = text(
        "INSERT INTO tenant_integrity (tenant_id, last_verified_at, last_verified_seq)"
        " VALUES (:t, now(), :s) ON CONFLICT (tenant_id) DO UPDATE"
        " SET last_verified_at = now(), last_verified_seq = EXCLUDED.last_verified_seq"
    )
    await conn.execute(stmt, {"t": tenant, "s": checked - 1})


async def mark_compromised(
    conn: AsyncConnection, tenant: str, seq: int | None, kind: str | None, detail: str
) -> bool:
    """Mark ``tenant`` compromised; False if it already was (the first finding stands)."""
    stmt = text(
        "INSERT INTO tenant_integrity"
        " (tenant_id, last_verified_at, compromised_at, compromised_seq, compromised_kind,"
        "  compromised_detail)"
        " VALUES (:t, now(), now(), :s, :k, :d) ON CONFLICT (tenant_id) DO UPDATE"
        " SET last_verified_at = now(), compromised_at = now(), compromised_seq = :s,"
        "     compromised_kind = :k, compromised_detail = :d"
        " WHERE tenant_integrity.compromised_at IS NULL"
        " RETURNING tenant_id"
    )
    result = await conn.execute(stmt, {"t": tenant, "s": seq, "k": kind, "d": detail})
    return result.first() is not None


async def clear_compromised(conn: AsyncConnection, tenant: str) -> bool:
    """Lift the compromised mark; True if there was one."""
    result = await conn.execute(
        STATUS.update()
        .where(STATUS.c.tenant_id == tenant, STATUS.c.compromised_at.is_not(None))
        .values(
            compromised_at=None,
            compromised_seq=None,
            compromised_kind=None,
            compromised_detail=None,
        )
        .returning(STATUS.c.tenant_id)
    )
    return result.first() is not None


def _mark(row: Any) -> CompromisedMark:
    return CompromisedMark(
        tenant=row.tenant_id,
        at=row.compromised_at,
        seq=row.compromised_seq,
        kind=row.compromised_kind,
        detail=row.compromised_detail,
    )


async def compromised(conn: AsyncConnection, tenant: str | None = None) -> list[CompromisedMark]:
    """Compromised marks, of one tenant or all."""
    stmt = select(STATUS).where(STATUS.c.compromised_at.is_not(None)).order_by(STATUS.c.tenant_id)
    if tenant is not None:
        stmt = stmt.where(STATUS.c.tenant_id == tenant)
    return [_mark(r) for r in (await conn.execute(stmt)).all()]


async def try_lock_scheduled_verification(conn: AsyncConnection) -> bool:
    """Take the advisory lock that makes one replica at a time run scheduled verification."""
    result = await conn.execute(text("SELECT pg_try_advisory_lock(hashtext('auditkit.verify'))"))
    return bool(result.scalar_one())


async def unlock_scheduled_verification(conn: AsyncConnection) -> None:
    """Release the scheduled-verification lock."""
    await conn.execute(text("SELECT pg_advisory_unlock(hashtext('auditkit.verify'))"))


async def tenant_sizes(conn: AsyncConnection) -> list[tuple[str, int]]:
    """Every tenant with its number of events (its chain head's next seq)."""
    rows = await conn.execute(
        select(HEADS.c.tenant_id, HEADS.c.next_seq).order_by(HEADS.c.tenant_id)
    )
    return [(r.tenant_id, r.next_seq) for r in rows]
