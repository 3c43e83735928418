"""The queue worker: moves queued events into PostgreSQL through the synchronous ingest path.

At-least-once delivery, exactly-once effect: an entry is acknowledged only after its event is
committed (or dead-lettered), and a redelivered entry finds its `event_id` already stored and
gets the original receipt, so it is never stored twice. Several workers can run at once: the
consumer group hands each entry to one of them, and the per-tenant chain-head lock keeps the
chain gapless whichever worker commits.

What happens to an entry:

| outcome | action |
|---|---|
| committed, or already stored | acknowledge |
| unreadable payload (poison) | dead-letter, acknowledge |
| `event_id` reused with other content | dead-letter, acknowledge |
| database unavailable (or its breaker open) | leave pending; wait for the breaker; retry |
| any other failure | leave pending; dead-letter once delivered `worker_max_attempts` times |

A worker that crashes leaves its entries pending; any worker takes them over with
`XAUTOCLAIM` once they have been idle for `queue_claim_idle_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from reference_impl.core.errors import AuditError, ConflictError, ServiceUnavailableError
from reference_impl.core.settings import Settings
from reference_impl.observability.metrics import DLQ_EVENTS, QUEUE_DEPTH, WORKER_EVENTS
from reference_impl.pipeline.breakers import POSTGRESQL, Breakers
from reference_impl.pipeline.dlq import DeadLetterQueue
from reference_impl.pipeline.queue import DELETED, IngestQueue, QueueEntry
from reference_impl.pipeline.service import IngestService

__all__ = ["BatchReport", "Worker", "default_consumer_name"]

log = structlog.get_logger(__name__)


def default_consumer_name() -> str:
    """`host-pid`: unique per process, stable for its life."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class BatchReport:
    """What one pass over a batch of entries did."""

    committed: int = 0
    dead_lettered: int = 0
    deferred: int = 0
    acked: list[QueueEntry] = field(default_factory=list)


class Worker:
    """Consumes the ingest streams until `stop()` is called.

    Args:
        settings: Batch size, block time, claim idle time, attempt budget.
        queue: The ingest streams.
        dlq: Where entries that failed for good go.
        ingest: The ingest service (its `commit` is the synchronous path).
        breakers: Consulted to wait out an open PostgreSQL breaker.
        consumer: This worker's name in the consumer group.
    """

    def __init__(
        self,
        settings: Settings,
        queue: IngestQueue,
        dlq: DeadLetterQueue,
        ingest: IngestService,
        breakers: Breakers,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.dlq = dlq
        self.ingest = ingest
        self.breakers = breakers
        self.consumer = consumer or default_consumer_name()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, then return from `run`."""
        self._stopping.set()

    # --8<-- [start:run]
    async def run(self) -> None:
        """Consume until stopped: own pending entries first, then stale ones, then new ones."""
        log.info("worker.started", consumer=self.consumer)
        backlog = True
        groups_ready = False
        while not self._stopping.is_set():
            try:
                if not groups_ready:
                    await self.queue.ensure_groups()
                    groups_ready = True
                if backlog:
                    entries = await self.queue.read_own_pending(
                        self.consumer, self.settings.worker_batch_size
                    )
                    backlog = bool(entries)
                if not backlog:
                    entries = await self.queue.claim_stale(
                        self.consumer,
                        int(self.settings.queue_claim_idle_s * 1000),
                        self.settings.worker_batch_size,
                    )
                if not backlog and not entries:
                    entries = await self.queue.read(
                        self.consumer,
                        self.settings.worker_batch_size,
                        self.settings.worker_block_ms,
                    )
                if entries:
                    report = await self.process(entries)
                    # Deferred entries stay pending with us: read them again first.
                    backlog = backlog or report.deferred > 0
                    if report.deferred:
                        await self._wait_for_database()
                QUEUE_DEPTH.labels("ingest").set(await self.queue.depth())
            except (RedisError, OSError) as exc:
                log.warning("worker.redis_unavailable", error=type(exc).__name__)
                await self._pause(1.0)
        log.info("worker.stopped", consumer=self.consumer)

    # --8<-- [end:run]

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _wait_for_database(self) -> None:
        if self.breakers.state(POSTGRESQL) == "open":
            await self._pause(self.breakers.retry_after(POSTGRESQL))
        else:
            await self._pause(0.2)

    # --8<-- [start:process]
    async def process(self, entries: Sequence[QueueEntry]) -> BatchReport:
        """Commit a batch of entries, one submit per event, then acknowledge what is done."""
        report = BatchReport()
        readable: list[QueueEntry] = []
        for entry in entries:
            if entry.error == DELETED:
                report.acked.append(entry)
            elif entry.event is None:
                await self._dead_letter(entry, "poison", "unreadable-entry", entry.error or "", 1)
                report.acked.append(entry)
                report.dead_lettered += 1
            else:
                readable.append(entry)
        # Each event is its own request to the committer, so one conflict cannot hold back
        # the others; the committer still writes them in shared transactions.
        outcomes = await asyncio.gather(
            *(self.ingest.commit(e.tenant, [e.event]) for e in readable if e.event is not None),
            return_exceptions=True,
        )
        failed: list[tuple[QueueEntry, BaseException]] = []
        for entry, outcome in zip(readable, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                report.acked.append(entry)
                report.committed += 1
            elif isinstance(outcome, ConflictError):
                await self._dead_letter(entry, "conflict", outcome.slug, outcome.detail, 1)
                report.acked.append(entry)
                report.dead_lettered += 1
            elif isinstance(outcome, ServiceUnavailableError):
                report.deferred += 1  # the database is away: not the event's fault
            else:
                failed.append((entry, outcome))
        if failed:
            deliveries = await self.queue.deliveries([e for e, _ in failed])
            await self.queue.note_failures([e for e, _ in failed])
            for entry, error in failed:
                attempts = deliveries.get(entry.entry_id, 1)
                if attempts >= self.settings.worker_max_attempts:
                    slug = error.slug if isinstance(error, AuditError) else "internal-error"
                    await self._dead_letter(entry, "attempts", slug, str(error), attempts)
                    report.acked.append(entry)
                    report.dead_lettered += 1
                else:
                    log.warning("worker.retry_later", entry=entry.entry_id, attempts=attempts)
                    report.deferred += 1
        await self.queue.ack(report.acked)
        WORKER_EVENTS.labels("committed").inc(report.committed)
        WORKER_EVENTS.labels("dead_lettered").inc(report.dead_lettered)
        WORKER_EVENTS.labels("deferred").inc(report.deferred)
        return report

    # --8<-- [end:process]

    async def _dead_letter(
        self, entry: QueueEntry, reason: str, error_type: str, detail: str, attempts: int
    ) -> None:
        event_id = str(entry.event.event_id) if entry.event is not None else None
        await self.dlq.add(
            entry.tenant or "unknown",
            entry.payload,
            event_id=event_id,
            digest=entry.event.digest if entry.event is not None else None,
            reason=reason,
            error_type=error_type,
            error_detail=detail,
            attempts=attempts,
            first_failure_at=await self.queue.first_failure(entry),
            source=f"{entry.stream}/{entry.entry_id}",
        )
        DLQ_EVENTS.labels(reason).inc()
        log.error("worker.dead_lettered", reason=reason, entry=entry.entry_id, tenant=entry.tenant)
