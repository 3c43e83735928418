"""Tampering with stored events the way an attacker with superuser access would.

Each function bypasses the append-only triggers (`session_replication_role = replica`,
which only a superuser may set) and edits one tenant's rows directly in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime

import asyncpg

from reference_impl.integrity import chain_hash

__all__ = [
    "append_forged",
    "delete",
    "delete_and_renumber",
    "insert_forged",
    "modify_canonical",
    "modify_column",
    "modify_signature",
    "swap",
    "truncate_from",
]

_SHIFT = 1_000_000_000


async def _bypass(conn: asyncpg.Connection) -> None:
    await conn.execute("SET session_replication_role = replica")


async def modify_canonical(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Rewrite one field inside the stored canonical bytes (hash left as it was)."""
    await _bypass(conn)
    row = await conn.fetchrow(
        "SELECT canonical FROM audit_events WHERE tenant_id = $1 AND seq = $2", tenant, seq
    )
    content = json.loads(row["canonical"])
    content["outcome"] = "failure" if content["outcome"] != "failure" else "success"
    forged = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    await conn.execute(
        "UPDATE audit_events SET canonical = $3 WHERE tenant_id = $1 AND seq = $2",
        tenant,
        seq,
        forged,
    )


async def modify_column(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Change a queryable column only, so queries find the event under another principal."""
    await _bypass(conn)
    await conn.execute(
        "UPDATE audit_events SET principal_id = 'someone.else' WHERE tenant_id = $1 AND seq = $2",
        tenant,
        seq,
    )


async def modify_signature(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Replace one signature with random bytes."""
    await _bypass(conn)
    await conn.execute(
        "UPDATE audit_events SET signature = $3 WHERE tenant_id = $1 AND seq = $2",
        tenant,
        seq,
        os.urandom(32),
    )


async def delete(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Delete one event and leave the gap."""
    await _bypass(conn)
    await conn.execute("DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2", tenant, seq)


async def _shift(conn: asyncpg.Connection, tenant: str, from_seq: int, by: int) -> None:
    # Two steps, so no intermediate row collides with a neighbour's primary key.
    await conn.execute(
        "UPDATE audit_events SET seq = seq + $3 WHERE tenant_id = $1 AND seq >= $2",
        tenant,
        from_seq,
        _SHIFT,
    )
    await conn.execute(
        "UPDATE audit_events SET seq = seq - $2::bigint + $3::bigint"
        " WHERE tenant_id = $1 AND seq >= $2::bigint",
        tenant,
        _SHIFT,
        by,
    )


async def delete_and_renumber(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Delete one event and renumber the later ones down to hide the gap."""
    await delete(conn, tenant, seq)
    await _shift(conn, tenant, seq + 1, -1)


async def truncate_from(conn: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Delete the event at ``seq`` and everything after it."""
    await _bypass(conn)
    await conn.execute("DELETE FROM audit_events WHERE tenant_id = $1 AND seq >= $2", tenant, seq)


async def _forged_row(conn: asyncpg.Connection, tenant: str, seq: int, prev: bytes) -> None:
    template = await conn.fetchrow(
        "SELECT * FROM audit_events WHERE tenant_id = $1 ORDER BY seq LIMIT 1", tenant
    )
    content = json.loads(template["canonical"])
    content["principal"]["id"] = "intruder"
    recorded_at = datetime.now(UTC)
    content["recorded_at"] = recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    canonical = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    digest = chain_hash(prev, seq, canonical)
    row = dict(template)
    row.update(
        seq=seq,
        recorded_at=recorded_at,
        event_id=uuid.uuid4(),
        principal_id="intruder",
        canonical=canonical,
        prev_hash=prev,
        hash=digest,
        # The attacker knows the algorithm but not the HMAC key.
        signature=hashlib.sha256(b"attacker" + digest).digest(),
    )
    cols = list(row)
    await conn.execute(
        f"INSERT INTO audit_events ({', '.join(cols)})"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))})",
        *row.values(),
    )


async def _hash_at(conn: asyncpg.Connection, tenant: str, seq: int) -> bytes:
    if seq < 0:
        return bytes(32)
    return bytes(
        await conn.fetchval(
            "SELECT hash FROM audit_events WHERE tenant_id = $1 AND seq = $2", tenant, seq
        )
    )


async def insert_forged(conn: asyncpg.Connection, tenant: str, seq: int, *, renumber: bool) -> None:
    """Insert a forged event at ``seq``, correctly chained to its predecessor.

    With ``renumber``, the later events are moved up by one to make room; without, the
    forged row duplicates ``seq``.
    """
    await _bypass(conn)
    prev = await _hash_at(conn, tenant, seq - 1)
    if renumber:
        await _shift(conn, tenant, seq, 1)
    await _forged_row(conn, tenant, seq, prev)


async def append_forged(conn: asyncpg.Connection, tenant: str) -> None:
    """Append a forged event after the last one, without touching the chain head."""
    await _bypass(conn)
    last = await conn.fetchval("SELECT max(seq) FROM audit_events WHERE tenant_id = $1", tenant)
    await _forged_row(conn, tenant, last + 1, await _hash_at(conn, tenant, last))


async def swap(conn: asyncpg.Connection, tenant: str, a: int, b: int) -> None:
    """Exchange the positions of two events."""
    await _bypass(conn)
    await conn.execute(
        "UPDATE audit_events SET seq = -1 WHERE tenant_id = $1 AND seq = $2", tenant, a
    )
    await conn.execute(
        "UPDATE audit_events SET seq = $3 WHERE tenant_id = $1 AND seq = $2", tenant, b, a
    )
    await conn.execute(
        "UPDATE audit_events SET seq = $2 WHERE tenant_id = $1 AND seq = -1", tenant, b
    )
