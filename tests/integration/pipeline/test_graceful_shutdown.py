"""SIGTERM under load: the API finishes in-flight requests, the worker its batch; nothing
acknowledged is lost, nothing is stored twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.events.verification import verify_tenant
from tests.conftest import new_tenant
from tests.support.events import make_event
from tests.support.processes import env_for, running_service
from tests.support.workers import drain, running_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _stored(app: object, tenant: object) -> list[str]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        resp = await c.get("/v1/events/export", headers=tenant.headers)  # type: ignore[attr-defined]
    return [json.loads(line)["event_id"] for line in resp.text.splitlines()]


async def test_api_sigterm_under_load_loses_no_acknowledged_event(
    app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    acknowledged: list[str] = []
    refused = 0
    with running_service(env_for(settings), tmp_path / "api.log") as service:
        base = service.url
        stop = asyncio.Event()

        async def client_loop() -> None:
            nonlocal refused
            async with httpx.AsyncClient(base_url=base, headers=tenant.headers, timeout=30) as c:
                while not stop.is_set():
                    event = make_event()
                    try:
                        r = await c.post("/v1/events", json=event)
                    except httpx.HTTPError:
                        refused += 1
                        await asyncio.sleep(0.05)
                        continue
                    if r.status_code == 201:
                        acknowledged.append(event["event_id"])
                    else:
                        refused += 1

        clients = [asyncio.create_task(client_loop()) for _ in range(16)]
        await asyncio.sleep(1.5)
        service.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.process.wait, 30) == 0
        stop.set()
        await asyncio.gather(*clients)
    assert len(acknowledged) > 50
    stored = await _stored(app, tenant)
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored))
    verdict = await verify_tenant(app.state.engine, app.state.keyring, tenant.name)  # type: ignore[attr-defined]
    assert verdict.result.valid


async def test_worker_sigterm_finishes_its_batch_and_nothing_is_lost(
    app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    acknowledged: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(30):
            batch = [make_event() for _ in range(50)]
            r = await client.post(
                "/v1/events:batch?mode=async", json={"events": batch}, headers=tenant.headers
            )
            assert r.status_code == 202
            acknowledged += [e["event_id"] for e in batch]
    env = env_for(settings, AUDIT_WORKER_BATCH_SIZE="100")
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_impl", "worker", "--consumer", "w-sigterm"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(await _stored(app, tenant)) > 0:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "worker.log").read_text()
    assert "worker.stopped" in text
    partial = await _stored(app, tenant)
    assert 0 < len(partial) <= len(acknowledged)
    async with running_worker(settings, "w-after-sigterm") as worker:
        await drain(worker, timeout=60)
    stored = await _stored(app, tenant)
    assert sorted(stored) == sorted(acknowledged)
