"""What the verifiable log runs inside the API process: scheduled checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from reference_impl.core.settings import Settings
from reference_impl.transparency.tasks import TransparencyLog, checkpoint_on_schedule

__all__ = ["lifespan"]

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the log from settings, publish its active key, checkpoint on a schedule."""
    settings: Settings = app.state.settings
    transparency = TransparencyLog.from_settings(app.state.engine, settings)
    app.state.transparency = transparency
    try:
        await transparency.register_active_key()
    except Exception as exc:  # the key is registered again with the first checkpoint it signs
        log.error("transparency.key_registration_failed", error=type(exc).__name__)
    task = None
    if settings.checkpoint_interval_s > 0:
        task = asyncio.create_task(
            checkpoint_on_schedule(transparency, settings.checkpoint_interval_s)
        )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
