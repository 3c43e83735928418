"""Health probes against servers the test really stops."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from reference_impl.api.app import create_app
from reference_impl.core.embedded import EmbeddedValkey
from reference_impl.core.settings import Settings
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert {k: v["status"] for k, v in ready.json()["checks"].items()} == {
        "postgresql": "up",
        "redis": "up",
    }
    assert ready.headers["cache-control"] == "no-store"


async def test_ready_names_the_dependency_that_is_down(
    settings: Settings, database_url: str
) -> None:
    valkey = EmbeddedValkey(Path(tempfile.mkdtemp(prefix="auditkit-health-")) / "valkey")
    valkey.start()
    try:
        app = create_app(
            make_settings(database_url, valkey.url(), settings.state_dir, health_timeout_s=0.5)
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
                assert (await c.get("/health/ready")).status_code == 200
                valkey.kill()
                down = await c.get("/health/ready")
                assert down.status_code == 503
                assert down.headers["content-type"] == "application/problem+json"
                assert down.headers["retry-after"] == "5"
                body = down.json()
                assert body["detail"] == "not ready: redis did not answer"
                assert body["checks"]["postgresql"]["status"] == "up"
                assert (await c.get("/health/live")).status_code == 200
                valkey.start()
                assert (await c.get("/health/ready")).status_code == 200
    finally:
        valkey.stop()


async def test_ready_reports_postgres_down(settings: Settings) -> None:
    dead = make_settings(
        "postgresql://postgres@127.0.0.1:1/none",
        settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        settings.state_dir,
        health_timeout_s=0.5,
    )
    app = create_app(dead)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
            down = await c.get("/health/ready")
    assert down.status_code == 503
    assert down.json()["detail"] == "not ready: postgresql did not answer"
