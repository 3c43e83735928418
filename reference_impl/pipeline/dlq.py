"""The dead-letter queue: events that failed for good, kept until someone replays or purges.

An entry is dead-lettered when it cannot succeed by waiting: its payload is unreadable, its
`event_id` is already stored with other content, or it failed `worker_max_attempts` times.
Nothing is dropped: each entry keeps the event as accepted, the problem that stopped it, the
attempt count and the first and last failure times, in a per-tenant stream
(`auditkit:dlq:<tenant>`), listed in the set `auditkit:dlq:tenants`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from reference_impl.events.ingest import IngestResult
from reference_impl.events.validation import prepared_from_content
from reference_impl.pipeline.service import IngestService

__all__ = ["DeadLetter", "DeadLetterQueue", "replay"]

_TENANTS = "auditkit:dlq:tenants"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered event."""

    id: str
    tenant: str
    event_id: str | None
    payload: bytes
    digest: bytes | None
    reason: str
    error_type: str
    error_detail: str
    attempts: int
    first_failure_at: str
    last_failure_at: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the payload is the event as it was accepted, as text)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "event_id": self.event_id,
            "reason": self.reason,
            "error_type": self.error_type,
            "error_detail": self.error_detail,
            "attempts": self.attempts,
            "first_failure_at": self.first_failure_at,
            "last_failure_at": self.last_failure_at,
            "source": self.source,
            "event": self.payload.decode(errors="replace"),
        }


def _text(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode(errors="replace")


def _letter(tenant: str, entry_id: Any, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        tenant=tenant,
        event_id=_text(fields, "event_id") or None,
        payload=fields.get(b"payload", b""),
        digest=base64.b64decode(fields[b"digest"]) if fields.get(b"digest") else None,
        reason=_text(fields, "reason"),
        error_type=_text(fields, "error_type"),
        error_detail=_text(fields, "error_detail"),
        attempts=int(_text(fields, "attempts") or 0),
        first_failure_at=_text(fields, "first_failure_at"),
        last_failure_at=_text(fields, "last_failure_at"),
        source=_text(fields, "source"),
    )


class DeadLetterQueue:
    """Per-tenant dead-letter streams."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @staticmethod
    def key(tenant: str) -> str:
        """The tenant's dead-letter stream."""
        return f"auditkit:dlq:{{{tenant}}}"

    async def add(
        self,
        tenant: str,
        payload: bytes,
        *,
        event_id: str | None,
        digest: bytes | None = None,
        reason: str,
        error_type: str,
        error_detail: str,
        attempts: int,
        first_failure_at: str | None = None,
        source: str = "",
    ) -> str:
        """Dead-letter one event; returns its id in the tenant's dead-letter stream."""
        now = datetime.now(UTC).isoformat()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.key(tenant),
                {
                    "event_id": event_id or "",
                    "payload": payload,
                    "digest": base64.b64encode(digest) if digest else b"",
                    "reason": reason,
                    "error_type": error_type,
                    "error_detail": error_detail[:500],
                    "attempts": str(attempts),
                    "first_failure_at": first_failure_at or now,
                    "last_failure_at": now,
                    "source": source,
                },
            )
            pipe.sadd(_TENANTS, tenant)
            new_id, _ = await pipe.execute()
        return str(new_id.decode() if isinstance(new_id, bytes) else new_id)

    async def entries(self, tenant: str, *, after: str = "-", limit: int = 100) -> list[DeadLetter]:
        """Entries of ``tenant`` in id order, starting after id ``after``."""
        start = "-" if after == "-" else f"({after}"
        rows: Any = await self.client.xrange(self.key(tenant), min=start, max="+", count=limit)
        return [_letter(tenant, i, f) for i, f in rows]

    async def get(self, tenant: str, entry_id: str) -> DeadLetter | None:
        """One entry, or None."""
        rows: Any = await self.client.xrange(self.key(tenant), min=entry_id, max=entry_id, count=1)
        return _letter(tenant, *rows[0]) if rows else None

    async def delete(self, tenant: str, entry_id: str) -> bool:
        """Remove one entry (after a replay, or a purge); True if it existed."""
        return bool(await self.client.xdel(self.key(tenant), entry_id))

    async def tenants(self) -> list[str]:
        """Tenants that have (or had) dead letters."""
        members = await self.client.smembers(_TENANTS)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def depth(self, tenant: str | None = None) -> int:
        """Dead letters waiting, for one tenant or all."""
        tenants = [tenant] if tenant else await self.tenants()
        total = 0
        for name in tenants:
            total += await self.client.xlen(self.key(name))
        return total


async def replay(dlq: DeadLetterQueue, ingest: IngestService, letter: DeadLetter) -> IngestResult:
    """Commit a dead-lettered event through the synchronous path, then drop the entry.

    The entry is removed only after the commit (or after finding the event already stored),
    so a replay that fails leaves it where it was.

    Raises:
        ValueError: the stored payload is not an event (purge it instead).
        ConflictError: its `event_id` is stored with other content.
        ServiceUnavailableError: the database is unavailable.
    """
    event = prepared_from_content(letter.payload, letter.digest)
    committed = await ingest.commit(letter.tenant, [event])
    await dlq.delete(letter.tenant, letter.id)
    [result] = committed.results
    return result
