"""A private PostgreSQL + Valkey + app for one test, whose servers the test may kill.

Degradation and chaos tests stop the servers they use; they must never stop the suite's
shared servers, so each gets its own processes on their own ports.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from reference_impl.api.app import create_app
from reference_impl.core.embedded import EmbeddedPostgres, EmbeddedValkey
from reference_impl.core.migrate import upgrade
from reference_impl.core.settings import Settings

__all__ = ["Stack", "private_stack"]


@dataclass
class Stack:
    """Servers, settings, the running app and a client for it."""

    postgres: EmbeddedPostgres
    valkey: EmbeddedValkey
    settings: Settings
    app: FastAPI
    client: httpx.AsyncClient
    root: Path


# --8<-- [start:private-stack]
@asynccontextmanager
async def private_stack(
    *, valkey_settings: dict[str, str] | None = None, **overrides: Any
) -> AsyncIterator[Stack]:
    """Start private servers, migrate, run the app; tear everything down afterwards."""
    from tests.conftest import make_settings

    root = Path(tempfile.mkdtemp(prefix="auditkit-stack-"))
    pg = EmbeddedPostgres(root / "postgres", settings={"fsync": "off"})
    valkey = EmbeddedValkey(root / "valkey", settings=valkey_settings)
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(valkey.start)
    try:
        await asyncio.to_thread(pg.ensure_database, "auditkit")
        url = pg.url("auditkit")
        await asyncio.to_thread(upgrade, url)
        values: dict[str, Any] = {
            "breaker_threshold": 2,
            "breaker_reset_s": 1.0,
            "commit_timeout_s": 1.5,
            "retry_timeout_s": 0.5,
            "health_timeout_s": 0.5,
            "queue_claim_idle_s": 0.5,
            "api_key_cache_seconds": 1.0,
        }
        values.update(overrides)
        settings = make_settings(url, valkey.url(), root / "state", **values)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://stack", timeout=30
            ) as client:
                yield Stack(pg, valkey, settings, app, client, root)
    finally:
        valkey.kill()
        pg.kill()
        shutil.rmtree(root, ignore_errors=True)


# --8<-- [end:private-stack]
