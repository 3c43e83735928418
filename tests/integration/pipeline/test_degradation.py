"""Graceful degradation, against servers each test really stops (never the shared ones).

In every case nothing acknowledged is lost: after recovery, every event answered 201 or 202
is stored, found by its `event_id`.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.conftest import Tenant, new_tenant
from tests.support.events import make_event
from tests.support.stack import Stack, private_stack
from tests.support.workers import drain, running_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _stored(stack: Stack, tenant: Tenant) -> set[str]:
    resp = await stack.client.get("/v1/events/export", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return {json.loads(line)["event_id"] for line in resp.text.splitlines()}


async def _post(stack: Stack, tenant: Tenant, mode: str = "sync") -> tuple[int, dict, dict]:
    event = make_event()
    resp = await stack.client.post(f"/v1/events?mode={mode}", json=event, headers=tenant.headers)
    return resp.status_code, event, resp.json() | {"_headers": dict(resp.headers)}


async def test_redis_down_sync_works_and_async_falls_back_to_sync() -> None:
    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        acknowledged = []
        stack.valkey.kill()
        status, event, _ = await _post(stack, tenant, "sync")
        assert status == 201
        acknowledged.append(event["event_id"])
        for _ in range(3):  # the first failures open the Redis breaker; then it is instant
            status, event, body = await _post(stack, tenant, "async")
            assert status == 201, body  # committed at once instead of queued
            acknowledged.append(event["event_id"])
        ready = (await stack.client.get("/health/ready")).json()
        assert ready["status"] == 503 and ready["detail"] == "not ready: redis did not answer"
        assert ready["breakers"]["redis"]["state"] == "open"
        metrics = (await stack.client.get("/metrics")).text
        assert 'auditkit_circuit_breaker_state{breaker="redis"} 2.0' in metrics
        assert "auditkit_queue_fallbacks_total" in metrics
        stack.valkey.start()
        assert await _stored(stack, tenant) == set(acknowledged)


async def test_redis_down_async_is_refused_when_fallback_is_off() -> None:
    async with private_stack(async_fallback="reject") as stack:
        tenant = await new_tenant(stack.app)
        stack.valkey.kill()
        status, _, body = await _post(stack, tenant, "async")
        assert status == 503
        assert body["type"] == "urn:auditkit:problem:redis-unavailable"
        assert int(body["_headers"]["retry-after"]) >= 1
        assert await _stored(stack, tenant) == set()


async def test_postgres_down_async_keeps_accepting_and_the_worker_drains_on_return() -> None:
    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        status, event, _ = await _post(stack, tenant, "sync")  # a client already at work
        assert status == 201
        acknowledged = [event["event_id"]]
        async with running_worker(stack.settings, "w-pg-down") as worker:
            stack.postgres.kill()
            sync_status, _, sync_body = await _post(stack, tenant, "sync")
            assert sync_status == 503
            assert sync_body["type"] == "urn:auditkit:problem:database-unavailable"
            assert "retry-after" in sync_body["_headers"]
            for _ in range(20):
                status, event, body = await _post(stack, tenant, "async")
                assert status == 202, body
                acknowledged.append(event["event_id"])
            await asyncio.sleep(1.0)  # the worker tries, fails, and keeps the entries pending
            assert await worker.queue.depth() == 20
            stack.postgres.start()
            await drain(worker, timeout=30)
        assert await _stored(stack, tenant) == set(acknowledged)
        verdict = (await stack.client.get("/v1/integrity/verify", headers=tenant.headers)).json()
        assert verdict["valid"] and verdict["checked"] == 21


async def test_both_down_is_503_with_retry_after_and_nothing_is_lost() -> None:
    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        status, event, _ = await _post(stack, tenant, "sync")
        assert status == 201
        stack.valkey.kill()
        stack.postgres.kill()
        for mode in ("sync", "async", "async"):
            status, _, body = await _post(stack, tenant, mode)
            assert status == 503, body
            assert int(body["_headers"]["retry-after"]) >= 1
        stack.postgres.start()
        stack.valkey.start()
        await asyncio.sleep(stack.settings.breaker_reset_s)
        assert await _stored(stack, tenant) == {event["event_id"]}


async def test_frozen_postgres_fails_fast_then_recovers() -> None:
    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        assert (await _post(stack, tenant))[0] == 201
        stack.postgres.pause()
        try:
            started = time.monotonic()
            first = await _post(stack, tenant)
            waited = time.monotonic() - started
            assert first[0] == 503
            second = await _post(stack, tenant)  # the breaker is open now: no waiting
            assert second[0] == 503
            ready = (await stack.client.get("/health/ready")).json()
            assert ready["breakers"]["postgresql"]["state"] == "open"
            metrics = (await stack.client.get("/metrics")).text
            assert 'auditkit_circuit_breaker_state{breaker="postgresql"} 2.0' in metrics
            # The first request retried (with backoff) before giving up; retries are counted.
            retried = [
                line
                for line in metrics.splitlines()
                if line.startswith("stamina_retries_total{") and "DatabaseUnavailableError" in line
            ]
            assert retried, metrics
        finally:
            stack.postgres.resume()
        # Bounded by the commit timeout plus retries, not by the freeze.
        assert waited < stack.settings.commit_timeout_s * 4
        await asyncio.sleep(stack.settings.breaker_reset_s)
        acknowledged = []
        for _ in range(3):
            status, event, _ = await _post(stack, tenant)
            if status == 201:
                acknowledged.append(event["event_id"])
        assert len(acknowledged) >= 2
        assert set(acknowledged) <= await _stored(stack, tenant)


async def test_redis_out_of_memory_refuses_queueing_but_not_ingest() -> None:
    async with private_stack(valkey_settings={"maxmemory": "2mb"}, async_fallback="reject") as s:
        tenant = await new_tenant(s.app)
        accepted, refused = [], 0
        big = {"note": "x" * 6000}
        for _ in range(600):
            event = make_event(details=big)
            r = await s.client.post("/v1/events?mode=async", json=event, headers=tenant.headers)
            if r.status_code == 202:
                accepted.append(event["event_id"])
            else:
                assert r.status_code == 503
                assert r.json()["type"] in {
                    "urn:auditkit:problem:queue-unavailable",
                    "urn:auditkit:problem:redis-unavailable",
                }
                refused += 1
        assert refused > 0 and accepted
        status, event, _ = await _post(s, tenant, "sync")
        assert status == 201
        async with running_worker(s.settings, "w-oom") as worker:
            await drain(worker, timeout=60)
        assert await _stored(s, tenant) == {*accepted, event["event_id"]}


async def test_full_queue_pushes_back_instead_of_growing() -> None:
    async with private_stack(queue_max_length=5, async_fallback="reject") as stack:
        tenant = await new_tenant(stack.app)
        statuses = [(await _post(stack, tenant, "async"))[0] for _ in range(7)]
        assert statuses == [202] * 5 + [503] * 2
        status, _, body = await _post(stack, tenant, "async")
        assert status == 503
        assert body["type"] == "urn:auditkit:problem:queue-unavailable"
        assert stack.app.state.breakers.state("redis") == "closed"  # backpressure, not failure
