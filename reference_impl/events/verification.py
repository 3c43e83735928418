"""Verification of stored chains: stream a tenant's rows through the integrity verifier.

The verifier recomputes every hash over the stored canonical bytes and checks every
signature. This module adds the check only the event store can make: that the queryable
columns beside the canonical bytes still say what the canonical bytes say. A row whose
`principal_id` column was edited, for example, would otherwise be found by queries under the
wrong principal while its hash still verified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reference_impl.core.db import scope
from reference_impl.events import repository
from reference_impl.integrity import (
    ChainRecord,
    KeyRing,
    VerificationResult,
    verify_chain_async,
)

__all__ = ["TenantVerification", "projection_matches", "verify_tenant"]


@dataclass(frozen=True, slots=True)
class TenantVerification:
    """The verification result of one tenant's chain."""

    tenant: str
    result: VerificationResult

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the CLI."""
        r = self.result
        return {
            "tenant": self.tenant,
            "valid": r.valid,
            "checked": r.checked,
            "first_broken_seq": r.first_broken_seq,
            "kind": None if r.kind is None else str(r.kind),
            "detail": r.detail,
        }


def projection_matches(row: Any) -> bool:
    """Whether a row's query columns agree with its canonical content."""
    try:
        content = orjson.loads(row.canonical)
        return bool(
            content.get("tenant") == row.tenant_id
            and content.get("event_id") == str(row.event_id)
            and _same_instant(content.get("recorded_at"), row.recorded_at)
            and _same_instant(content.get("occurred_at"), row.occurred_at)
            and content.get("action") == row.action
            and content.get("category") == row.category
            and content.get("outcome") == row.outcome
            and content.get("data_classification") == row.data_classification
            and content.get("principal", {}).get("id") == row.principal_id
            and content.get("target", {}).get("subject_id") == row.subject_id
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return False


def _same_instant(text: Any, value: datetime) -> bool:
    return isinstance(text, str) and datetime.fromisoformat(text) == value


async def _records(conn: AsyncConnection, tenant: str) -> AsyncIterator[ChainRecord]:
    async for row in repository.stream_chain(conn, tenant):
        yield ChainRecord(
            seq=row.seq,
            prev_hash=bytes(row.prev_hash),
            hash=bytes(row.hash),
            canonical=bytes(row.canonical),
            key_id=row.key_id,
            signature=bytes(row.signature),
            consistent=projection_matches(row),
        )


async def verify_tenant(
    engine: AsyncEngine,
    keyring: KeyRing,
    tenant: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> TenantVerification:
    """Verify ``tenant``'s whole chain against its stored head.

    The head and the rows are read in one REPEATABLE READ snapshot, so events committed
    while verification runs are neither half-seen nor mistaken for insertions.
    """
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await scope(conn, tenant)
            head = await repository.chain_head(conn, tenant)
            result = await verify_chain_async(
                _records(conn, tenant), head, keyring, progress=progress
            )
    return TenantVerification(tenant=tenant, result=result)
