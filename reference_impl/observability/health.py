"""Liveness and readiness probes. Never cached: a cached probe hides an outage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from reference_impl.core.errors import ServiceUnavailableError

__all__ = ["check_dependencies", "router"]

router = APIRouter(tags=["health"])
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/health/live", summary="The process is up")
async def live() -> Response:
    """Answers while the event loop runs; restarts are for when it does not."""
    return Response(
        orjson.dumps({"status": "ok"}), headers=_NO_STORE, media_type="application/json"
    )


async def _timed(check: Any, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {limit:g}s"}
    except Exception as exc:  # any failure of the dependency is "down"
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def check_dependencies(request: Request) -> dict[str, dict[str, Any]]:
    """Ask PostgreSQL and Redis, concurrently, each within the health timeout."""
    state = request.app.state
    timeout = state.settings.health_timeout_s

    async def postgres() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await state.redis.ping()

    pg, rd = await asyncio.gather(_timed(postgres, timeout), _timed(redis, timeout))
    return {"postgresql": pg, "redis": rd}


async def _integrity(request: Request, database_up: bool) -> dict[str, Any]:
    monitor = getattr(request.app.state, "monitor", None)
    if monitor is None or not database_up:
        return {"status": "unknown"}
    try:
        tenants = await asyncio.wait_for(
            monitor.compromised(), request.app.state.settings.health_timeout_s
        )
    except Exception:  # the database check above already reports why
        return {"status": "unknown"}
    return {"status": "compromised" if tenants else "ok", "compromised": tenants}


# --8<-- [start:ready]
@router.get(
    "/health/ready",
    summary="PostgreSQL and Redis answer",
    responses={503: {"content": {"application/problem+json": {}}}},
)
async def ready(request: Request) -> Response:
    """`200` when every dependency answers in time; otherwise a `503` problem naming them.

    The body also reports the circuit breakers and any tenant whose log is compromised. A
    compromised log does not make the process unready: it keeps serving reads (with a
    warning header) and recording new events, which is what an investigation needs.
    """
    checks = await check_dependencies(request)
    breakers = getattr(request.app.state, "breakers", None)
    extra = {
        "breakers": breakers.snapshot() if breakers is not None else {},
        "integrity": await _integrity(request, checks["postgresql"]["status"] == "up"),
    }
    down = [name for name, result in checks.items() if result["status"] != "up"]
    if down:
        raise ServiceUnavailableError(
            f"not ready: {', '.join(down)} did not answer", retry_after=5, checks=checks, **extra
        )
    return Response(
        orjson.dumps({"status": "ready", "checks": checks, **extra}),
        headers=_NO_STORE,
        media_type="application/json",
    )


# --8<-- [end:ready]
