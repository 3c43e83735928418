"""The COPY ceiling, and a large verifiable log built the way the service would build it.

One tenant gets N events through PostgreSQL's `COPY`. The rows are computed first, by the
service's own functions: each event's content is canonicalised and digested as validation
does it, `plan_batch` assigns seqs, chains, signs and builds the event and index rows, and
`extend_frontier` computes the Merkle nodes over the stored canonical bytes. Only then is
the clock started: the rows one event writes (its `audit_events` row, its
`audit_event_index` row and the Merkle nodes it completes that the service stores,
`stored_subtrees`) are copied into the same tables,
with the same indexes, triggers and partitions the service writes to, one transaction per
chunk, each committed with `fsync`. Events per second of that is the ceiling: how fast this
database on this machine takes the rows, with no HTTP, validation or hashing in front of it.

The result is a tenant whose chain, tree, frontier and head are exactly what the ingest
path would have written: `auditkit verify` passes on it and inclusion proofs check out,
which the benchmark then measures at that size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]
import orjson

from loadtests.scenarios.events import EventFactory
from reference_impl.events.ingest import plan_batch
from reference_impl.events.repository import EVENT_FIELDS
from reference_impl.events.staging import stage
from reference_impl.events.validation import PreparedEvent, canonical_bytes, content_digest
from reference_impl.integrity import GENESIS_HASH, ChainHead, KeyRing
from reference_impl.integrity.merkle import extend_frontier, leaf_hash
from reference_impl.transparency.service import stored_subtrees

__all__ = ["BulkLog", "build_log", "settle"]

# The columns the ingest path writes, in its order: COPY writes exactly those.
EVENT_COLUMNS = EVENT_FIELDS
INDEX_COLUMNS = ("tenant_id", "event_id", "seq", "recorded_at", "content_digest", "hash", "key_id")


@dataclass
class BulkLog:
    """What `build_log` wrote and how fast PostgreSQL took it."""

    tenant: str
    events: int
    copy_seconds: float
    prepare_seconds: float
    rows_per_event: float
    sample_ids: list[str]

    @property
    def events_per_s(self) -> float:
        """The ceiling: events per second of COPY and commit alone."""
        return self.events / self.copy_seconds if self.copy_seconds > 0 else 0.0


def _prepared(factory: EventFactory, pepper: bytes | None, now: datetime) -> PreparedEvent:
    # The content validation produces for this event: the factory writes every field in
    # its normal form already (UTC timestamps with microseconds and `Z`), as a test checks.
    content = factory.event(now)
    digest = content_digest(canonical_bytes(content), pepper)
    return PreparedEvent(event_id=UUID(content["event_id"]), content=content, digest=digest)


async def build_log(
    database_url: str,
    tenant: str,
    events: int,
    keyring: KeyRing,
    pepper: bytes | None,
    *,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> BulkLog:
    """Write ``events`` events of ``tenant`` with COPY; time the COPY and commits only.

    Args:
        database_url: The database, as its owner (COPY bypasses the service role).
        tenant: A tenant with no events yet.
        events: How many.
        keyring: The service's signing keys.
        pepper: The service's idempotency-digest key.
        chunk: Events per transaction.
        progress: Called with the number of events written so far.
    """
    factory = EventFactory(seed=11, with_ip=False)
    head = ChainHead(next_seq=0, head_hash=GENESIS_HASH)
    size, frontier = 0, list[bytes]()
    copy_s = prepare_s = 0.0
    rows_written = 0
    samples: list[str] = []
    conn = await asyncpg.connect(database_url)
    try:
        done = 0
        while done < events:
            n = min(chunk, events - done)
            started = time.perf_counter()
            now = datetime.now(UTC)
            batch = [_prepared(factory, pepper, now) for _ in range(n)]
            plan = plan_batch([(tenant, stage(tenant, batch))], {tenant: head}, {}, keyring, now)
            head = plan.heads[tenant]
            size, frontier, created = extend_frontier(
                size, frontier, [leaf_hash(canonical) for canonical in plan.rows.canonical]
            )
            rows = plan.rows.as_dicts()
            event_records = [tuple(r[c] for c in EVENT_COLUMNS) for r in rows]
            index_records = [tuple(r[c] for c in INDEX_COLUMNS) for r in rows]
            node_records = stored_subtrees(tenant, created)
            samples.extend(str(ev.event_id) for ev in batch[:: max(1, n // 50)])
            prepare_s += time.perf_counter() - started
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "audit_events", records=event_records, columns=EVENT_COLUMNS
                )
                await conn.copy_records_to_table(
                    "audit_event_index", records=index_records, columns=INDEX_COLUMNS
                )
                await conn.copy_records_to_table(
                    "merkle_nodes",
                    records=node_records,
                    columns=("tenant_id", "level", "idx", "hash"),
                )
            copy_s += time.perf_counter() - started
            rows_written += len(event_records) + len(index_records) + len(node_records)
            done += n
            if progress is not None:
                progress(done)
        await _finish(conn, tenant, head, size, frontier)
    finally:
        await conn.close()
    return BulkLog(tenant, events, copy_s, prepare_s, rows_written / max(events, 1), samples)


async def _finish(
    conn: Any, tenant: str, head: ChainHead, size: int, frontier: list[bytes]
) -> None:
    """The chain head and the tree's frontier, as the last ingest transaction leaves them."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO chain_heads (tenant_id, next_seq, head_hash) VALUES ($1, $2, $3)",
            tenant,
            head.next_seq,
            head.head_hash,
        )
        await conn.execute(
            "INSERT INTO merkle_frontiers (tenant_id, tree_size, frontier) VALUES ($1, $2, $3)",
            tenant,
            size,
            frontier,
        )
    await settle(conn)


# --8<-- [start:settle]
async def settle(conn: Any) -> None:
    """Leave nothing of the bulk load for the server to do in the middle of a measurement.

    Left alone, PostgreSQL would start an autovacuum of every table the load filled (a
    table that grew by a fifth is vacuumed for its inserts) and a checkpoint once the load's
    write-ahead log reaches `max_wal_size`, each at a moment of its choosing, for minutes,
    on the cores the service and the load generator share, and a phase that met one would
    measure it as much as the service. As pgbench vacuums before a run, this vacuums and
    analyses the loaded tables and checkpoints, before any later phase is timed.
    """
    for table in ("audit_events", "audit_event_index", "merkle_nodes"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    await conn.execute("CHECKPOINT")


# --8<-- [end:settle]


def event_json(factory: EventFactory) -> bytes:
    """One event body (used by tests to compare with what validation produces)."""
    return orjson.dumps(factory.event())
