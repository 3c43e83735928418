"""Leased rate-limit units: a busy credential skips most round trips to Redis, and no budget
is ever spent beyond its limit, however many processes reserve from it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from reference_impl.core.embedded import EmbeddedValkey
from reference_impl.core.errors import RateLimitedError
from reference_impl.core.settings import Settings
from reference_impl.security.ratelimit import KEY_PREFIX, RateLimiter
from reference_impl.security.service import Caller

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url is not None
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    yield redis
    await redis.aclose()


def limiter(client: aioredis.Redis, settings: Settings, **overrides: Any) -> RateLimiter:
    return RateLimiter(client, settings.model_copy(update=overrides))


def ingest_limiter(
    client: aioredis.Redis, settings: Settings, per_hour: int, share: float
) -> RateLimiter:
    """A limiter whose ingest budget is ``per_hour`` units for a credential and its tenant."""
    return limiter(
        client,
        settings,
        rate_limit_ingest_key=f"{per_hour}/hour",
        rate_limit_ingest_tenant=f"{per_hour}/hour",
        rate_limit_lease_share=share,
    )


def round_trips(limiter: RateLimiter) -> list[int]:
    """Counts the limiter's calls to Redis (one per flush), leaving them to run as they do."""
    calls = [0]
    real = limiter._run

    async def counted(groups: list[Any]) -> list[Any]:
        calls[0] += 1
        return await real(groups)

    limiter._run = counted  # type: ignore[method-assign]
    return calls


async def allowed(limiter: RateLimiter, caller: Caller, budget: Any = "ingest") -> bool:
    try:
        await limiter.spend(caller, budget)
    except RateLimitedError:
        return False
    return True


async def counted_in_redis(client: aioredis.Redis, caller: Caller, budget: str) -> int:
    """What Redis holds for the credential in its current window(s)."""
    pattern = f"{KEY_PREFIX}:{{{caller.tenant}}}:{budget}:k:{caller.subject}:*"
    values = [await client.get(k) for k in await client.keys(pattern)]
    return sum(int(v) for v in values if v is not None)


def caller() -> Caller:
    run = uuid.uuid4().hex[:8]  # counters outlive the test in the suite's Redis
    return Caller(f"lease-{run}", f"key:{run}")


async def test_a_busy_credential_reserves_ahead_and_skips_round_trips(
    client: aioredis.Redis, settings: Settings
) -> None:
    rl = ingest_limiter(client, settings, 1000, share=0.1)
    calls = round_trips(rl)
    who = caller()
    headers = [await rl.spend(who, "ingest") for _ in range(40)]
    # Each reservation is sized by what the credential spent so far: 1, 2, 4, ... units.
    assert calls[0] <= 7
    in_redis = await counted_in_redis(client, who, "ingest")
    assert 40 <= in_redis <= 40 + 100  # everything spent is counted; at most a cap more
    # The fields count what was spent, not what was reserved.
    assert headers[-1]["RateLimit"].startswith('"ingest";r=960;')
    assert headers[-1]["RateLimit-Policy"] == '"ingest";q=1000;w=3600'


async def test_concurrent_requests_share_one_reservation(
    client: aioredis.Redis, settings: Settings
) -> None:
    rl = limiter(client, settings, rate_limit_ingest_key="100000/hour", rate_limit_lease_share=0.1)
    calls = round_trips(rl)
    who = caller()
    await rl.spend(who, "ingest")
    await rl.spend(who, "ingest")  # the credential has spent: the next reservations grow
    outcomes = await asyncio.gather(*(allowed(rl, who) for _ in range(300)))
    assert all(outcomes)
    # One request reserves while the others wait for its units, not 300 round trips.
    assert calls[0] <= 2 + 10
    assert 302 <= await counted_in_redis(client, who, "ingest") <= 302 + 10_000


async def test_processes_reserving_from_one_budget_never_spend_beyond_it(
    client: aioredis.Redis, settings: Settings
) -> None:
    first = ingest_limiter(client, settings, 25, share=0.5)
    second = ingest_limiter(client, settings, 25, share=0.5)
    who = caller()
    outcomes = [await allowed(rl, who) for _ in range(40) for rl in (first, second)]
    held = sum(lease.units for rl in (first, second) for lease in rl._leases.values())
    # Redis holds exactly what was spent plus what the two still hold in reserve ...
    assert await counted_in_redis(client, who, "ingest") == 25
    assert sum(outcomes) + held == 25
    # ... and each spent at least some, each refused in the end.
    assert outcomes[-2:] == [False, False]
    assert any(outcomes[0::2]) and any(outcomes[1::2])


async def test_a_budget_too_small_for_one_unit_is_counted_request_by_request(
    client: aioredis.Redis, settings: Settings
) -> None:
    rl = limiter(client, settings, rate_limit_query_key="50/second")  # 1 % of 50 < 1
    calls = round_trips(rl)
    who = caller()
    for _ in range(5):
        await rl.spend(who, "query")
    assert calls[0] == 5
    assert not rl._leases


async def test_requests_waiting_on_a_reservation_that_failed_go_to_redis_together(
    settings: Settings, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey")
    valkey.start()
    redis = aioredis.from_url(valkey.url())
    try:
        rl = limiter(redis, settings, rate_limit_ingest_key="100000/hour")
        who = caller()
        await rl.spend(who, "ingest")
        valkey.kill()
        calls = round_trips(rl)
        # The first reserves and fails; the rest, waiting for it, then share one flush
        # (and fail open, as ingest does by default) instead of failing one by one.
        results = await asyncio.gather(*(rl.spend(who, "ingest") for _ in range(20)))
        assert results == [{}] * 20
        assert calls[0] == 2
    finally:
        await redis.aclose()
        valkey.kill()


async def test_requests_waiting_on_a_refused_reservation_are_refused_together(
    client: aioredis.Redis, settings: Settings
) -> None:
    rl = ingest_limiter(client, settings, 30, share=0.5)
    who = caller()
    while await allowed(rl, who):  # spend the whole budget
        pass
    calls = round_trips(rl)
    outcomes = await asyncio.gather(*(allowed(rl, who) for _ in range(50)))
    assert not any(outcomes)
    # One refused reservation, then one shared flush for the 49 that waited on it.
    assert calls[0] == 2
