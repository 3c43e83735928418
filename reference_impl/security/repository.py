"""Queries of the security domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reference_impl.security.models import ApiKeyRow

__all__ = ["get_key_by_prefix", "insert_key", "list_keys", "revoke_key", "touch_key"]

KEYS = cast(Table, ApiKeyRow.__table__)


async def insert_key(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Store a new key row."""
    await conn.execute(insert(KEYS).values(**row))


async def get_key_by_prefix(conn: AsyncConnection, prefix: str) -> Any | None:
    """The key row with this public prefix, or None.

    Runs before the tenant is known, so it goes through `auditkit_api_key()`, which returns
    that one row whatever the row-level security scope.
    """
    stmt = text("SELECT * FROM auditkit_api_key(:prefix)")
    return (await conn.execute(stmt, {"prefix": prefix})).first()


async def list_keys(conn: AsyncConnection, tenant: str | None = None) -> list[Any]:
    """Key rows, newest first, optionally of one tenant."""
    stmt = select(KEYS).order_by(KEYS.c.created_at.desc())
    if tenant is not None:
        stmt = stmt.where(KEYS.c.tenant_id == tenant)
    return list((await conn.execute(stmt)).all())


async def revoke_key(conn: AsyncConnection, prefix: str, at: datetime) -> UUID | None:
    """Mark a key revoked; returns its id, or None if there was no live key with that prefix."""
    result = await conn.execute(
        update(KEYS)
        .where(KEYS.c.prefix == prefix, KEYS.c.revoked_at.is_(None))
        .values(revoked_at=at)
        .returning(KEYS.c.id)
    )
    row = result.first()
    return None if row is None else row.id


async def touch_key(conn: AsyncConnection, prefix: str) -> None:
    """Record that a key was used (at most once a minute per key, to spare the row)."""
    await conn.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE prefix = :p"
            " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
        ),
        {"p": prefix},
    )


# -- data keys (field encryption) -----------------------------------------------------------


async def active_data_key(conn: AsyncConnection, tenant: str) -> Any | None:
    """The tenant's newest live data key row."""
    stmt = text(
        "SELECT id, kek_id, wrapped FROM data_keys WHERE tenant_id = :t AND destroyed_at IS NULL"
        " ORDER BY created_at DESC LIMIT 1"
    )
    return (await conn.execute(stmt, {"t": tenant})).first()


async def insert_data_key(
    conn: AsyncConnection, key_id: str, tenant: str, kek_id: str, wrapped: bytes
) -> None:
    """Store a new wrapped data key."""
    await conn.execute(
        text("INSERT INTO data_keys (id, tenant_id, kek_id, wrapped) VALUES (:id, :t, :kek, :w)"),
        {"id": key_id, "t": tenant, "kek": kek_id, "w": wrapped},
    )


async def data_key(conn: AsyncConnection, key_id: str) -> Any | None:
    """One data key row by id (its `wrapped` is NULL once destroyed)."""
    stmt = text("SELECT id, tenant_id, kek_id, wrapped FROM data_keys WHERE id = :id")
    return (await conn.execute(stmt, {"id": key_id})).first()


async def data_keys_to_rewrap(conn: AsyncConnection, active_kek_id: str) -> list[Any]:
    """Live data keys wrapped by another key-encryption key than the active one."""
    stmt = text(
        "SELECT id, tenant_id, kek_id, wrapped FROM data_keys"
        " WHERE kek_id <> :kek AND wrapped IS NOT NULL ORDER BY created_at"
    )
    return list((await conn.execute(stmt, {"kek": active_kek_id})).all())


async def rewrap_data_key(conn: AsyncConnection, key_id: str, kek_id: str, wrapped: bytes) -> None:
    """Replace a data key's wrapping."""
    await conn.execute(
        text(
            "UPDATE data_keys SET kek_id = :kek, wrapped = :w, rewrapped_at = now() WHERE id = :id"
        ),
        {"id": key_id, "kek": kek_id, "w": wrapped},
    )
