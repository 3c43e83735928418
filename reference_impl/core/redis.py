"""The Redis/Valkey client and the start-up check of its eviction policy."""

from __future__ import annotations

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from reference_impl.core.settings import Settings

__all__ = ["check_eviction_policy", "create_redis"]

log = structlog.get_logger(__name__)


def create_redis(settings: Settings) -> aioredis.Redis:
    """A pooled asyncio client; commands time out instead of hanging on a frozen server."""
    if settings.redis_url is None:
        raise ValueError("no Redis URL resolved")
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.health_timeout_s * 2,
        socket_connect_timeout=settings.health_timeout_s,
        health_check_interval=30,
    )


async def check_eviction_policy(client: aioredis.Redis) -> str | None:
    """Return the server's `maxmemory-policy`, warning unless it is `noeviction`.

    Queued audit events must never be evicted to make room; a server that evicts can lose
    acknowledged events. Managed services that hide CONFIG return None.
    """
    try:
        reply = await client.config_get("maxmemory-policy")
    except ResponseError:
        log.warning("redis.eviction_policy.unknown", reason="CONFIG GET refused")
        return None
    except RedisError:
        return None
    policy = str(reply.get("maxmemory-policy", ""))
    if policy != "noeviction":
        log.warning("redis.eviction_policy.unsafe", policy=policy, expected="noeviction")
    return policy
