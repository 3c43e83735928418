"""An extra app on the suite's servers, with settings of the test's choosing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from reference_impl.api.app import create_app
from reference_impl.core.settings import Settings

__all__ = ["app_with"]


@asynccontextmanager
async def app_with(
    base: Settings, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with ``base`` settings changed by ``overrides``, its lifespan running."""
    from tests.conftest import make_settings

    settings = make_settings(
        base.database_url.get_secret_value(),  # type: ignore[union-attr]
        base.redis_url.get_secret_value(),  # type: ignore[union-attr]
        base.state_dir,
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auditkit.test") as c:
            yield app, c
