"""Rate limits: separate ingest and query budgets, per credential and per tenant."""

from __future__ import annotations

import time

import pytest

from reference_impl.core.settings import Settings
from tests.conftest import new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event
from tests.support.stack import private_stack

pytestmark = pytest.mark.integration


async def test_query_budget_429_with_retry_after_and_ratelimit_fields(settings: Settings) -> None:
    async with app_with(settings, rate_limit_query_key="3/minute") as (app, client):
        tenant = await new_tenant(app)
        statuses = []
        for _ in range(4):
            resp = await client.get("/v1/events", headers=tenant.headers)
            statuses.append(resp.status_code)
        assert statuses == [200, 200, 200, 429]
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["type"] == "urn:auditkit:problem:rate-limited"
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert resp.headers["ratelimit-policy"] == '"query";q=3;w=60'
        assert resp.headers["ratelimit"].startswith('"query";r=0;t=')
        # Ingest has its own budget.
        ok = await client.post("/v1/events", json=make_event(), headers=tenant.headers)
        assert ok.status_code == 201
        assert ok.headers["ratelimit-policy"].startswith('"ingest";q=')


async def test_a_batch_spends_one_unit_per_event(settings: Settings) -> None:
    async with app_with(settings, rate_limit_ingest_key="10/minute") as (app, client):
        tenant = await new_tenant(app)
        batch = {"events": [make_event() for _ in range(8)]}
        first = await client.post("/v1/events:batch", json=batch, headers=tenant.headers)
        assert first.status_code == 201
        assert first.headers["ratelimit"].startswith('"ingest";r=2;')
        second = await client.post(
            "/v1/events:batch",
            json={"events": [make_event() for _ in range(3)]},
            headers=tenant.headers,
        )
        assert second.status_code == 429
        stored = (await client.get("/v1/events", headers=tenant.headers)).json()["items"]
        assert len(stored) == 8


async def test_the_tenant_budget_spans_its_credentials(settings: Settings) -> None:
    async with app_with(
        settings, rate_limit_query_key="100/minute", rate_limit_query_tenant="4/minute"
    ) as (app, client):
        tenant = await new_tenant(app)
        other_key = (await app.state.api_keys.create(tenant.name, "second", roles=["reader"])).key
        headers = [tenant.headers, {"X-API-Key": other_key}]
        statuses = [
            (await client.get("/v1/events", headers=headers[i % 2])).status_code for i in range(6)
        ]
        assert statuses == [200, 200, 200, 200, 429, 429]


async def test_redis_down_ingest_fails_open_query_as_configured() -> None:
    async with private_stack(rate_limit_query_when_redis_down="closed") as stack:
        tenant = await new_tenant(stack.app)
        await stack.client.get("/v1/events", headers=tenant.headers)  # warm the key cache
        stack.valkey.kill()
        started = time.monotonic()
        ingest = await stack.client.post("/v1/events", json=make_event(), headers=tenant.headers)
        assert ingest.status_code == 201
        assert "ratelimit" not in ingest.headers
        query = await stack.client.get("/v1/events", headers=tenant.headers)
        assert query.status_code == 503
        assert query.json()["detail"] == "cannot count the rate limit now; retry"
        assert time.monotonic() - started < 15


async def test_redis_down_query_open_by_default() -> None:
    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        await stack.client.get("/v1/events", headers=tenant.headers)
        stack.valkey.kill()
        assert (await stack.client.get("/v1/events", headers=tenant.headers)).status_code == 200
