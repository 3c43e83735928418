"""What the pipeline domain runs inside the API process: the ingest service, and in dev a
queue worker, so that queued mode works with nothing else started."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from reference_impl.core.settings import Settings
from reference_impl.pipeline.breakers import Breakers
from reference_impl.pipeline.dlq import DeadLetterQueue
from reference_impl.pipeline.queue import IngestQueue
from reference_impl.pipeline.service import IngestService
from reference_impl.pipeline.worker import Worker

__all__ = ["lifespan"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the queue, dead-letter queue, breakers and ingest service; run a worker if asked."""
    settings: Settings = app.state.settings
    breakers = Breakers(settings.breaker_threshold, settings.breaker_reset_s)
    queue = IngestQueue(
        app.state.redis, shards=settings.queue_shards, max_length=settings.queue_max_length
    )
    dlq = DeadLetterQueue(app.state.redis)
    ingest = IngestService(settings, app.state.committer, queue, breakers)
    app.state.breakers = breakers
    app.state.queue = queue
    app.state.dlq = dlq
    app.state.ingest = ingest
    # Create the consumer groups now: a server that later runs out of memory refuses
    # XGROUP CREATE, but still lets a worker read and acknowledge to free memory.
    with contextlib.suppress(Exception):
        await queue.ensure_groups()
    worker_task = None
    worker = None
    if settings.runs_embedded_worker:
        worker = Worker(settings, queue, dlq, ingest, breakers)
        worker_task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        if worker is not None and worker_task is not None:
            worker.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker_task, timeout=settings.commit_timeout_s * 2)
