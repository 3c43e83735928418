"""What the events domain runs inside the API process: committers and partition upkeep."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from reference_impl.core.db import create_engine
from reference_impl.core.settings import Settings
from reference_impl.events import repository
from reference_impl.events.ingest import GroupCommitter
from reference_impl.events.monitoring import IntegrityMonitor
from reference_impl.observability.alerts import Alerter

__all__ = ["lifespan"]

log = structlog.get_logger(__name__)
PARTITION_CHECK_SECONDS = 6 * 3600


async def _maintain_partitions(app: FastAPI) -> None:
    """Keep monthly partitions created ahead, now and every few hours."""
    settings: Settings = app.state.settings
    while True:
        try:
            async with app.state.engine.begin() as conn:
                created = await repository.ensure_partitions(conn, settings.partitions_ahead_months)
            if created:
                log.info("partitions.created", count=created)
        except Exception as exc:  # a failure here must not stop the service; it is retried
            log.error("partitions.maintenance_failed", error=type(exc).__name__)
        await asyncio.sleep(PARTITION_CHECK_SECONDS)


# --8<-- [start:scheduled-verification]
async def _verify_on_schedule(app: FastAPI, interval: float) -> None:
    """Verify every chain every ``interval`` seconds (one replica at a time)."""
    monitor: IntegrityMonitor = app.state.monitor
    while True:
        await asyncio.sleep(interval)
        try:
            results = await monitor.check_all()
            if results:
                broken = sum(not r.result.valid for r in results)
                log.info("integrity.scheduled_verification", tenants=len(results), broken=broken)
        except Exception as exc:  # retried next interval; the failure itself is logged
            log.error("integrity.scheduled_verification_failed", error=type(exc).__name__)


# --8<-- [end:scheduled-verification]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the group committers and partition upkeep; drain the committers on exit."""
    settings: Settings = app.state.settings
    app.state.ingest_engine = create_engine(settings, purpose="ingest")
    committer = GroupCommitter(
        app.state.ingest_engine,
        app.state.keyring,
        committers=settings.group_commit_committers,
        max_events=settings.group_commit_max_events,
        linger_s=settings.group_commit_linger_ms / 1000,
    )
    app.state.committer = committer
    app.state.monitor = IntegrityMonitor(
        app.state.engine, app.state.keyring, Alerter(settings.alert_webhook_url)
    )
    await committer.start()
    tasks = [asyncio.create_task(_maintain_partitions(app))]
    if settings.verify_interval_s > 0:
        tasks.append(asyncio.create_task(_verify_on_schedule(app, settings.verify_interval_s)))
    with contextlib.suppress(Exception):
        await app.state.monitor.refresh_gauge()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await committer.close()
        await app.state.ingest_engine.dispose()
