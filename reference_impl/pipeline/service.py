"""The ingest service: one entry point for synchronous and queued ingest, with degradation.

| situation | synchronous request | queued request (`?mode=async`) |
|---|---|---|
| all up | `201` after commit | `202` after `XADD` |
| Redis down | `201` after commit | `201` after commit (`async_fallback=sync`) or `503` |
| PostgreSQL down | `503` + `Retry-After` | `202` while the stream is below its bound |
| both down | `503` + `Retry-After` | `503` + `Retry-After` |

Nothing is acknowledged unless it is committed or in the stream, and nothing acknowledged is
dropped: a failed commit is retried (bounded, with jittered backoff), then answered `503`
so the client retries with the same `event_id`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import stamina
import structlog
from redis.exceptions import RedisError

from reference_impl.core.errors import (
    DatabaseUnavailableError,
    QueueUnavailableError,
    RedisUnavailableError,
    ServiceUnavailableError,
)
from reference_impl.core.settings import Settings
from reference_impl.events.ingest import GroupCommitter, IngestResult
from reference_impl.events.validation import PreparedEvent
from reference_impl.observability.metrics import INGEST_EVENTS, QUEUE_FALLBACKS
from reference_impl.pipeline.breakers import POSTGRESQL, REDIS, BreakerOpenError, Breakers
from reference_impl.pipeline.queue import IngestQueue, QueueFullError

__all__ = ["Committed", "IngestService", "Queued"]

log = structlog.get_logger(__name__)

Mode = Literal["sync", "async"]

# Bound once: looking a labelled child up costs more than counting with it (every request).
_SYNC_CREATED = INGEST_EVENTS.labels("sync", "created")
_SYNC_DUPLICATE = INGEST_EVENTS.labels("sync", "duplicate")
_ASYNC_QUEUED = INGEST_EVENTS.labels("async", "queued")


@dataclass(frozen=True, slots=True)
class Committed:
    """The events are committed: one result (receipt) per event."""

    results: list[IngestResult]


@dataclass(frozen=True, slots=True)
class Queued:
    """The events are durably in the ingest stream; a worker will commit them."""

    entry_ids: list[str]


def _transient(exc: Exception) -> bool:
    # A dropped connection or a failed commit may succeed on the next try; a client error
    # (validation, conflict) never will, and an open breaker says not to try.
    return isinstance(exc, DatabaseUnavailableError)


class IngestService:
    """Routes events to the committer or the queue, and degrades when a dependency fails."""

    def __init__(
        self,
        settings: Settings,
        committer: GroupCommitter,
        queue: IngestQueue,
        breakers: Breakers,
    ) -> None:
        self.settings = settings
        self.committer = committer
        self.queue = queue
        self.breakers = breakers

    async def ingest(
        self, tenant: str, events: Sequence[PreparedEvent], mode: Mode | None = None
    ) -> Committed | Queued:
        """Store or enqueue ``events`` for ``tenant`` in the requested (or default) mode.

        Raises:
            ConflictError: an `event_id` is reused with other content (nothing stored).
            ServiceUnavailableError: neither path can take the events now; retry later.
        """
        mode = mode or self.settings.ingest_mode_default
        if mode == "async":
            try:
                queued = await self.enqueue(tenant, events)
            except ServiceUnavailableError as exc:
                if self.settings.async_fallback != "sync":
                    INGEST_EVENTS.labels("async", "unavailable").inc(len(events))
                    raise
                QUEUE_FALLBACKS.inc(len(events))
                log.warning("ingest.queue_fallback", reason=exc.slug, events=len(events))
            else:
                _ASYNC_QUEUED.inc(len(events))
                return queued
        committed = await self.commit(tenant, events)
        created = sum(r.created for r in committed.results)
        _SYNC_CREATED.inc(created)
        _SYNC_DUPLICATE.inc(len(events) - created)
        return committed

    # --8<-- [start:commit]
    async def commit(self, tenant: str, events: Sequence[PreparedEvent]) -> Committed:
        """Commit through the PostgreSQL breaker, retrying transient failures.

        Raises:
            DatabaseUnavailableError: the breaker is open, or the retries ran out.
            ConflictError: an `event_id` is reused with other content.
        """
        try:
            async with self.breakers.guard(POSTGRESQL):
                started = time.monotonic()
                try:
                    return Committed(await self.committer.submit(tenant, events))
                except DatabaseUnavailableError as exc:  # what `_transient` retries
                    first = exc
                # stamina (tenacity) builds its retry state afresh for every loop, ~15 µs
                # of CPU per request: the first attempt runs without it, and a failure is
                # replayed as the retry loop's first attempt, which then counts, backs off
                # and gives up exactly as if it had run that attempt (same deadline).
                left = self.settings.retry_timeout_s - (time.monotonic() - started)
                if left <= 0 or self.settings.retry_attempts == 1:
                    raise first
                failure: DatabaseUnavailableError | None = first
                async for attempt in stamina.retry_context(
                    on=_transient,
                    attempts=self.settings.retry_attempts,
                    timeout=left,
                    wait_initial=0.05,
                    wait_max=0.5,
                    wait_jitter=0.1,
                ):
                    with attempt:
                        if failure is not None:
                            replayed, failure = failure, None
                            raise replayed
                        return Committed(await self.committer.submit(tenant, events))
        except BreakerOpenError as exc:
            raise DatabaseUnavailableError(
                "the event store is unavailable; retry with the same event_id",
                retry_after=exc.retry_after,
            ) from None
        raise AssertionError("unreachable: retry_context returns or raises")  # pragma: no cover

    # --8<-- [end:commit]

    # --8<-- [start:enqueue]
    async def enqueue(self, tenant: str, events: Sequence[PreparedEvent]) -> Queued:
        """Put events in the ingest stream through the Redis breaker.

        Raises:
            RedisUnavailableError: Redis did not answer, or its breaker is open.
            QueueUnavailableError: the stream is full, or Redis refused the write.
        """
        try:
            async with self.breakers.guard(REDIS):
                try:
                    return Queued(await self.queue.enqueue(tenant, events))
                except QueueFullError:
                    full = True  # backpressure, not a failure of Redis: keep the breaker
        except BreakerOpenError as exc:
            raise RedisUnavailableError(
                "the queue is unavailable", retry_after=exc.retry_after
            ) from None
        except (RedisError, OSError) as exc:
            if "OOM" in str(exc):
                raise QueueUnavailableError("the queue server is out of memory") from None
            raise RedisUnavailableError("the queue is unavailable") from None
        assert full
        raise QueueUnavailableError("the ingest queue is full", retry_after=5)

    # --8<-- [end:enqueue]
