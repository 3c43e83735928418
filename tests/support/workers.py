"""Drive queue workers from tests: drain, or stop mid-way as a crash would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from reference_impl.core.settings import Settings
from reference_impl.pipeline.runner import worker_runtime
from reference_impl.pipeline.worker import Worker

__all__ = ["drain", "running_worker"]


@asynccontextmanager
async def running_worker(settings: Settings, consumer: str) -> AsyncIterator[Worker]:
    """A worker running in the background; stopped gracefully when the block ends."""
    async with worker_runtime(settings, consumer) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)


async def drain(worker: Worker, timeout: float = 30.0) -> None:
    """Wait until the ingest streams hold no entries (everything acknowledged)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await worker.queue.depth() > 0:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{await worker.queue.depth()} entries still queued")
        await asyncio.sleep(0.05)
