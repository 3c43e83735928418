"""Requests that arrive together share work without changing its outcome: one key lookup
for many requests presenting the same key, one Redis round trip for many rate-limit spends,
each spend still counted exactly once."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from reference_impl.core.embedded import EmbeddedValkey
from reference_impl.core.errors import RateLimitedError, UnauthorizedError
from reference_impl.core.settings import Settings
from reference_impl.security.ratelimit import RateLimiter
from reference_impl.security.service import ApiKeyService, Caller
from tests.conftest import new_tenant
from tests.support.apps import app_with

pytestmark = pytest.mark.integration


async def test_concurrent_requests_with_one_key_share_one_lookup(app: Any) -> None:
    tenant = await new_tenant(app)
    settings: Settings = app.state.settings
    assert settings.api_key_pepper is not None
    service = ApiKeyService(
        app.state.engine, base64.b64decode(settings.api_key_pepper.get_secret_value())
    )
    lookups = 0
    real = service._lookup

    async def counted(prefix: str) -> Any:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.05)  # every request arrives while the lookup is in flight
        return await real(prefix)

    service._lookup = counted  # type: ignore[method-assign]
    callers = await asyncio.gather(*(service.authenticate(tenant.key) for _ in range(200)))
    assert lookups == 1
    assert {c.tenant for c in callers} == {tenant.name}
    bad = tenant.key[:-4] + "AAAA"
    outcomes = await asyncio.gather(
        *(service.authenticate(bad) for _ in range(20)), return_exceptions=True
    )
    assert lookups == 2
    assert all(isinstance(o, UnauthorizedError) for o in outcomes)
    await service.close()


async def test_a_cancelled_lookup_does_not_fail_the_requests_waiting_for_it(app: Any) -> None:
    tenant = await new_tenant(app)
    settings: Settings = app.state.settings
    assert settings.api_key_pepper is not None
    service = ApiKeyService(
        app.state.engine, base64.b64decode(settings.api_key_pepper.get_secret_value())
    )
    real = service._lookup

    async def slow(prefix: str) -> Any:
        await asyncio.sleep(0.1)
        return await real(prefix)

    service._lookup = slow  # type: ignore[method-assign]
    first = asyncio.ensure_future(service.authenticate(tenant.key))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(service.authenticate(tenant.key))
    await asyncio.sleep(0.01)
    first.cancel()
    caller = await waiter
    assert caller.tenant == tenant.name
    await service.close()


async def test_concurrent_spends_are_each_counted_once(settings: Settings) -> None:
    async with app_with(
        settings, rate_limit_query_key="10/minute", rate_limit_query_tenant="15/minute"
    ) as (app, _):
        limiter = app.state.rate_limiter
        run = uuid.uuid4().hex[:8]  # counters live in the suite's Redis for a minute
        a = Caller(f"rl-a-{run}", f"key:a-{run}")
        b = Caller(f"rl-a-{run}", f"key:b-{run}")
        other = Caller(f"rl-b-{run}", f"key:c-{run}")

        async def spend(caller: Caller) -> bool:
            try:
                await limiter.spend(caller, "query")
            except RateLimitedError:
                return False
            return True

        outcomes = await asyncio.gather(*(spend(c) for c in [a] * 12 + [b] * 12 + [other] * 12))
        allowed_a = sum(outcomes[:12])
        allowed_b = sum(outcomes[12:24])
        allowed_other = sum(outcomes[24:])
        assert allowed_a == 10  # the credential's budget
        assert allowed_a + allowed_b == 15  # the tenant's budget spans both credentials
        assert allowed_other == 10  # another tenant counts apart


async def test_spends_go_on_after_the_server_forgets_the_script(settings: Settings) -> None:
    async with app_with(settings, rate_limit_query_key="3/minute") as (app, _):
        limiter = app.state.rate_limiter
        caller = Caller(f"rl-{uuid.uuid4().hex[:8]}", "key:flush")
        await limiter.spend(caller, "query")
        await app.state.redis.script_flush()  # as a restarted server would have
        headers = await limiter.spend(caller, "query")
        assert headers["RateLimit"].startswith('"query";r=1;')


async def test_spends_of_several_tenants_go_on_after_the_server_forgets_the_script(
    settings: Settings,
) -> None:
    async with app_with(settings, rate_limit_query_key="3/minute") as (app, _):
        limiter = app.state.rate_limiter
        run = uuid.uuid4().hex[:8]
        callers = [Caller(f"rl-{t}-{run}", f"key:{t}") for t in ("x", "y")]
        await app.state.redis.script_flush()
        # Spends of two tenants in one turn of the loop share a pipelined round trip.
        first = await asyncio.gather(*(limiter.spend(c, "query") for c in callers))
        await app.state.redis.script_flush()
        second = await asyncio.gather(*(limiter.spend(c, "query") for c in callers))
        assert [h["RateLimit"][:12] for h in first] == ['"query";r=2;'] * 2
        assert [h["RateLimit"][:12] for h in second] == ['"query";r=1;'] * 2


async def test_spends_stay_out_of_the_append_only_file(settings: Settings, tmp_path: Path) -> None:
    # The server fsyncs every write to its append-only file (as the ingest queue needs);
    # counters that a spend waits on must not be among them.
    valkey = EmbeddedValkey(tmp_path / "valkey")
    valkey.start()
    client = aioredis.from_url(valkey.url())
    try:
        limiter = RateLimiter(client, settings)
        caller = Caller("rl-aof", "key:aof")
        for _ in range(3):
            await limiter.spend(caller, "ingest")
        await client.xadd("control-stream", {"k": "v"})
        assert len(await client.keys("auditkit:ratelimit:*")) == 2  # tenant and credential
        logged = b"".join(p.read_bytes() for p in valkey.data_dir.rglob("*.aof"))
        assert b"control-stream" in logged
        assert b"auditkit:ratelimit" not in logged
    finally:
        await client.aclose()
        valkey.stop()
