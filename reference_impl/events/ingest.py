"""Ingest: put prepared events on their tenant's chain, many requests per transaction.

Group commit: each API process runs a few committer tasks. A request hands its events to the
committer that owns its tenant and waits; the committer takes everything that queued up
while the previous transaction ran and writes it in one transaction. Under load, hundreds of
requests share one commit, and an idle service still commits each request at once.

Inside the transaction, the tenant's chain-head row is locked (`SELECT ... FOR UPDATE`), so
writers of one tenant are serialised by PostgreSQL across every process: `seq` stays
gapless and every `prev_hash` is the hash before it, however many API processes and workers
write at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import structlog
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import HeldConnection, scoped
from reference_impl.core.errors import (
    AuditError,
    ConflictError,
    DatabaseUnavailableError,
    ProblemField,
    ShuttingDownError,
)
from reference_impl.events import repository
from reference_impl.events.batch_read import open_batch, stored_leaves
from reference_impl.events.batch_write import write_batch
from reference_impl.events.repository import IndexEntry
from reference_impl.events.staging import EventRows, StagedEvent, stage
from reference_impl.events.validation import PreparedEvent, format_timestamp
from reference_impl.integrity import ChainHead, KeyRing, chain_hash
from reference_impl.observability.metrics import COMMIT_BATCH_EVENTS, COMMIT_SECONDS
from reference_impl.transparency.service import extend_trees

__all__ = ["GroupCommitter", "IngestResult", "StoredReceipt", "plan_batch"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """Where an event sits in its chain."""

    event_id: str
    seq: int
    hash: str
    recorded_at: str
    key_id: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON receipt."""
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "hash": self.hash,
            "recorded_at": self.recorded_at,
            "key_id": self.key_id,
        }


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The receipt of one event, and whether this request stored it (False: a retry)."""

    receipt: StoredReceipt
    created: bool


@dataclass(slots=True)
class _Pending:
    tenant: str
    events: Sequence[StagedEvent]
    future: asyncio.Future[list[IngestResult]] = field(repr=False)


@dataclass(slots=True)
class BatchPlan:
    """What one transaction writes and what each request gets back."""

    rows: EventRows
    heads: dict[str, ChainHead] = field(default_factory=dict)
    outcomes: list[list[IngestResult] | AuditError] = field(default_factory=list)


def _receipt_of(entry: IndexEntry) -> StoredReceipt:
    return StoredReceipt(
        event_id=str(entry.event_id),
        seq=entry.seq,
        hash=entry.hash.hex(),
        recorded_at=format_timestamp(entry.recorded_at),
        key_id=entry.key_id,
    )


# --8<-- [start:plan-batch]
def plan_batch(
    requests: Sequence[tuple[str, Sequence[StagedEvent]]],
    heads: dict[str, ChainHead],
    existing: dict[tuple[str, Any], IndexEntry],
    keyring: KeyRing,
    now: datetime,
) -> BatchPlan:
    """Assign seqs, hash, sign and build rows for a batch of requests (no I/O).

    This is the part of a commit that runs under the chain-head locks, so it does only what
    depends on the heads: each event's content was serialised when it was staged, and only
    the commit's time is put between the two halves here.

    A request is all-or-nothing: if any of its events reuses a stored `event_id` with other
    content, the whole request gets a `ConflictError` and none of its events is written.
    A retried event with the same content gets its original receipt.

    Raises:
        ValueError: An event was staged for another tenant than its request's.
    """
    plan = BatchPlan(rows=EventRows(now), heads=dict(heads))
    rows = plan.rows
    recorded_at = format_timestamp(now)
    stamp = recorded_at.encode()
    # What each (tenant, event_id) of this batch or the store already holds: its digest
    # and its receipt.
    seen: dict[tuple[str, Any], tuple[bytes, StoredReceipt]] = {
        key: (entry.content_digest, _receipt_of(entry)) for key, entry in existing.items()
    }
    for tenant, events in requests:
        conflicts = [
            ProblemField(
                "this event_id was already recorded with different content",
                pointer=f"/events/{i}/event_id" if len(events) > 1 else "/event_id",
            )
            for i, st in enumerate(events)
            if (prior := seen.get((tenant, st.event.event_id))) is not None
            and prior[0] != st.event.digest
        ]
        if not conflicts:
            conflicts = _conflicts_within(events)
        if conflicts:
            plan.outcomes.append(
                ConflictError(
                    "an event_id is reused with different content; nothing was stored",
                    errors=[c.as_dict() for c in conflicts],
                )
            )
            continue
        results: list[IngestResult] = []
        head = plan.heads[tenant]
        seq, prev = head.next_seq, head.head_hash
        for st in events:
            if st.columns[0] != tenant:
                raise ValueError("an event staged for another tenant")
            key = (tenant, st.event.event_id)
            prior = seen.get(key)
            if prior is not None:
                results.append(IngestResult(prior[1], created=False))
                continue
            canonical = st.head + stamp + st.tail
            digest = chain_hash(prev, seq, canonical)
            key_id, signature = keyring.sign(digest)
            rows.staged.append(st.columns)
            rows.seq.append(seq)
            rows.canonical.append(canonical)
            rows.prev_hash.append(prev)
            rows.hash.append(digest)
            rows.key_id.append(key_id)
            rows.signature.append(signature)
            receipt = StoredReceipt(
                st.event.content["event_id"], seq, digest.hex(), recorded_at, key_id
            )
            seen[key] = (st.event.digest, receipt)
            results.append(IngestResult(receipt, created=True))
            seq, prev = seq + 1, digest
        plan.heads[tenant] = ChainHead(next_seq=seq, head_hash=prev)
        plan.outcomes.append(results)
    plan.heads = {t: h for t, h in plan.heads.items() if h != heads.get(t)}
    return plan


# --8<-- [end:plan-batch]


def _conflicts_within(events: Sequence[StagedEvent]) -> list[ProblemField]:
    first: dict[Any, bytes] = {}
    out = []
    for i, st in enumerate(events):
        prior = first.setdefault(st.event.event_id, st.event.digest)
        if prior != st.event.digest:
            out.append(
                ProblemField(
                    "the same event_id appears earlier in this batch with different content",
                    pointer=f"/events/{i}/event_id",
                )
            )
    return out


class GroupCommitter:
    """Commits queued ingest requests in shared transactions.

    Args:
        engine: The database engine.
        keyring: Signs each chain hash.
        committers: Concurrent committer tasks; a tenant always goes to the same one, so
            one process never has two transactions waiting on the same chain head.
        max_events: Upper bound of events in one transaction.
        linger_s: How long a committer waits after the first request of a transaction for
            more to join it (`group_commit_linger_ms`); none by default.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: KeyRing,
        *,
        committers: int = 2,
        max_events: int = 2000,
        linger_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.max_events = max_events
        self.linger_s = linger_s
        self._queues: list[asyncio.Queue[_Pending]] = [asyncio.Queue() for _ in range(committers)]
        # Each committer keeps its connection from one transaction to the next.
        self._held = [HeldConnection(engine) for _ in range(committers)]
        self._tasks: list[asyncio.Task[None]] = []
        self._known_tenants: set[str] = set()
        self._closing = False

    async def start(self) -> None:
        """Start the committer tasks."""
        self._tasks = [
            asyncio.create_task(self._run(q, held))
            for q, held in zip(self._queues, self._held, strict=True)
        ]

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        for queue in self._queues:
            await queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for held in self._held:
            await held.release()

    async def submit(self, tenant: str, events: Sequence[PreparedEvent]) -> list[IngestResult]:
        """Store ``events`` for ``tenant``; returns one result per event, in order.

        Raises:
            ConflictError: an `event_id` was reused with other content (nothing stored).
            ServiceUnavailableError: the database could not commit; retry with the same ids.
        """
        if self._closing:
            raise ShuttingDownError("this process is shutting down; retry", retry_after=1)
        # Staged here, in the request's task: the committer's time is lock-held time.
        staged = stage(tenant, events)
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        queue = self._queues[zlib.crc32(tenant.encode()) % len(self._queues)]
        queue.put_nowait(_Pending(tenant, staged, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Pending], held: HeldConnection) -> None:
        while True:
            batch = [await queue.get()]
            size = len(batch[0].events)
            if self.linger_s and size < self.max_events:
                await asyncio.sleep(self.linger_s)
            while size < self.max_events and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
                size += len(item.events)
            try:
                await self._commit_or_isolate(batch, held)
            finally:
                for _ in batch:
                    queue.task_done()

    # --8<-- [start:commit-or-isolate]
    async def _commit_or_isolate(self, batch: list[_Pending], held: HeldConnection) -> None:
        try:
            await self._commit(batch, held)
        except Exception as exc:
            if len(batch) > 1 and _blames_a_row(exc):
                # One request's data broke the statement: commit each on its own so the
                # others still land and only the culprit gets the error.
                for item in batch:
                    await self._commit_or_isolate([item], held)
                return
            error = _as_problem(exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)

    # --8<-- [end:commit-or-isolate]

    # --8<-- [start:commit]
    async def _commit(self, batch: list[_Pending], held: HeldConnection) -> None:
        started = time.perf_counter()
        tenants = sorted({p.tenant for p in batch})
        fresh = [t for t in tenants if t not in self._known_tenants]
        if fresh:
            async with scoped(self.engine, fresh, write=True) as conn:
                await repository.ensure_tenants(conn, fresh)
            self._known_tenants.update(fresh)
        keys = [(p.tenant, st.event.event_id) for p in batch for st in p.events]
        async with held.transaction() as driver:
            state = await open_batch(driver, tenants, keys)
            if len(state.heads) != len(tenants):
                # The database lost a head this process thought existed (a restored or
                # recreated database): forget what we knew and let the caller retry.
                self._known_tenants.clear()
                raise DatabaseUnavailableError("chain heads were reset; retry", retry_after=1)
            plan = plan_batch(
                [(p.tenant, p.events) for p in batch],
                state.heads,
                state.existing,
                self.keyring,
                _now(),
            )
            tree = await extend_trees(
                plan.rows.leaves(), state.frontiers, partial(stored_leaves, driver)
            )
            await write_batch(driver, plan.rows, tree.nodes, tree.frontiers, plan.heads)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        COMMIT_BATCH_EVENTS.observe(len(plan.rows))
        for item, outcome in zip(batch, plan.outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, AuditError):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    # --8<-- [end:commit]


def _now() -> datetime:
    # PostgreSQL keeps microseconds; so does the canonical timestamp.
    return datetime.now(UTC)


def _blames_a_row(exc: BaseException) -> bool:
    """Errors caused by a value in the data (SQLSTATE class 22 or 23), not by the server.

    The hot statements run on the asyncpg connection and raise asyncpg's errors; the
    others pass through SQLAlchemy, which wraps the same errors in `DBAPIError`.
    """
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
        exc = exc.orig  # type: ignore[assignment]
    elif not isinstance(exc, asyncpg.PostgresError):
        return False
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return isinstance(code, str) and code[:2] in {"22", "23"}


def _as_problem(exc: BaseException) -> AuditError:
    if isinstance(exc, AuditError):
        return exc
    if isinstance(
        exc,
        SQLAlchemyError | asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError,
    ):
        log.error("ingest.commit_failed", error=type(exc).__name__, message=str(exc)[:300])
        return DatabaseUnavailableError(
            "the event store is unavailable; retry with the same event_id", retry_after=2
        )
    log.exception("ingest.unexpected_error")
    return AuditError("the event could not be stored; retry with the same event_id")
