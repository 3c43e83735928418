"""The FastAPI application factory: routers mounted per version, problems, middleware.

Each domain contributes its routers and, where it runs something in the process (committers,
schedulers), a `lifespan` context manager. Core resources (engine, Redis client, key ring)
are opened first and closed last.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from reference_impl.api.direct import AuditApp, DirectDispatch
from reference_impl.api.middleware import (
    ApiHeaders,
    ApiHeadersMiddleware,
    CorrelationIdMiddleware,
    UnexpectedErrorMiddleware,
)
from reference_impl.api.problems import install_problem_handlers, unexpected_error
from reference_impl.core.db import create_engine
from reference_impl.core.heap import settle_heap
from reference_impl.core.http import API_PREFIX
from reference_impl.core.redis import check_eviction_policy, create_redis
from reference_impl.core.settings import Settings
from reference_impl.events import endpoints as event_endpoints
from reference_impl.events import runtime as event_runtime
from reference_impl.events.validation import BatchIn
from reference_impl.integrity import KeyRing
from reference_impl.observability import health, metrics
from reference_impl.pipeline import endpoints as pipeline_endpoints
from reference_impl.pipeline import runtime as pipeline_runtime
from reference_impl.security import endpoints as security_endpoints
from reference_impl.security import runtime as security_runtime
from reference_impl.transparency import endpoints as transparency_endpoints
from reference_impl.transparency import runtime as transparency_runtime

__all__ = ["API_VERSION", "create_app"]

API_VERSION = API_PREFIX.strip("/")

# Routers mounted under /v1, and routers mounted at the root (probes).
VERSIONED_ROUTERS: list[APIRouter] = [
    event_endpoints.ingest_router,
    event_endpoints.router,
    pipeline_endpoints.router,
    transparency_endpoints.router,
    security_endpoints.router,
]
ROOT_ROUTERS: list[APIRouter] = [health.router, metrics.router]
# Entered in order after the core resources exist, exited in reverse.
DOMAIN_LIFESPANS: list[Callable[[FastAPI], AbstractAsyncContextManager[None]]] = [
    security_runtime.lifespan,
    event_runtime.lifespan,
    pipeline_runtime.lifespan,
    transparency_runtime.lifespan,
]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    assert settings.active_signing_key is not None
    app.state.engine = create_engine(settings)
    app.state.redis = create_redis(settings)
    app.state.keyring = KeyRing(settings.signing_secrets, settings.active_signing_key)
    try:
        with contextlib.suppress(Exception):
            await check_eviction_policy(app.state.redis)
        async with AsyncExitStack() as stack:
            for lifespan in DOMAIN_LIFESPANS:
                await stack.enter_async_context(lifespan(app))
            settle_heap()
            yield
    finally:
        await app.state.redis.aclose()
        await app.state.engine.dispose()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # Bodies parsed from raw bytes (strictly) are declared here, not by FastAPI.
    for model in (BatchIn,):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings) -> AuditApp:
    """Build the service for resolved ``settings`` (backend URLs and keys filled in)."""
    app = AuditApp(
        title="auditkit",
        version="0.1.0",
        summary="Tamper-evident audit logging for healthcare",
        lifespan=_lifespan,
        debug=settings.debug,
        # The service reports through Prometheus metrics and structured logs; FastAPI's
        # native OpenTelemetry hooks would cost a provider lookup on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_problem_handlers(app)
    # Added last runs first: the correlation id exists before anything else happens, and an
    # exception no handler took becomes a 500 inside every layer that adds headers.
    app.add_middleware(UnexpectedErrorMiddleware, respond=unexpected_error)
    headers = ApiHeaders(
        version=API_VERSION,
        max_body_bytes=max(settings.max_batch_bytes, settings.max_event_bytes),
        hsts=settings.hsts,
    )
    app.add_middleware(ApiHeadersMiddleware, headers=headers)
    if settings.cors_origins:  # off unless origins are named: the API serves no browser app
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Correlation-ID"],
            expose_headers=["X-Correlation-ID", "RateLimit", "RateLimit-Policy", "Retry-After"],
        )
    app.add_middleware(CorrelationIdMiddleware)
    for router in VERSIONED_ROUTERS:
        app.include_router(router)  # no prefix: the routers carry theirs (`API_PREFIX`)
    for router in ROOT_ROUTERS:
        app.include_router(router)
    if not settings.cors_origins:  # the CORS middleware must see every request
        routes = [route for router in VERSIONED_ROUTERS for route in router.routes]
        app.direct = DirectDispatch(app, headers, routes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
