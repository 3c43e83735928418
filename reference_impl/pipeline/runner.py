"""A queue worker as its own process: `auditkit worker`.

The worker builds what the API process builds for ingest (an ingest engine, the group
committer, the queue, the dead-letter queue, the breakers), so queued events take exactly the
synchronous path: same chain, same idempotency. SIGTERM or SIGINT stops it gracefully: the
batch in hand is committed and acknowledged before the process exits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from reference_impl.core.db import create_engine
from reference_impl.core.heap import WORKER_YOUNG_THRESHOLD, settle_heap
from reference_impl.core.redis import check_eviction_policy, create_redis
from reference_impl.core.settings import Settings
from reference_impl.events.ingest import GroupCommitter
from reference_impl.integrity import KeyRing
from reference_impl.pipeline.breakers import Breakers
from reference_impl.pipeline.dlq import DeadLetterQueue
from reference_impl.pipeline.queue import IngestQueue
from reference_impl.pipeline.service import IngestService
from reference_impl.pipeline.worker import Worker

__all__ = ["run_worker", "worker_runtime"]


@asynccontextmanager
async def worker_runtime(settings: Settings, consumer: str | None = None) -> AsyncIterator[Worker]:
    """A ready worker and everything it needs; closed (committer drained) on exit."""
    assert settings.active_signing_key is not None
    engine = create_engine(settings, purpose="ingest")
    redis = create_redis(settings)
    committer = GroupCommitter(
        engine,
        KeyRing(settings.signing_secrets, settings.active_signing_key),
        committers=settings.group_commit_committers,
        max_events=settings.group_commit_max_events,
    )
    await committer.start()
    try:
        breakers = Breakers(settings.breaker_threshold, settings.breaker_reset_s)
        queue = IngestQueue(
            redis, shards=settings.queue_shards, max_length=settings.queue_max_length
        )
        ingest = IngestService(settings, committer, queue, breakers)
        yield Worker(settings, queue, DeadLetterQueue(redis), ingest, breakers, consumer)
    finally:
        await committer.close()
        await redis.aclose()
        await engine.dispose()


async def run_worker(settings: Settings, consumer: str | None = None) -> None:
    """Run a worker until SIGTERM or SIGINT, then finish its batch and exit."""
    async with worker_runtime(settings, consumer) as worker:
        await check_eviction_policy(worker.queue.client)
        settle_heap(WORKER_YOUNG_THRESHOLD)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
