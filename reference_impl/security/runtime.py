"""What the security domain runs inside the API process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from reference_impl.core.settings import Settings
from reference_impl.security.encryption import FieldEncryptor, LocalKeyFileProvider
from reference_impl.security.ratelimit import RateLimiter
from reference_impl.security.service import REVOCATIONS, ApiKeyService
from reference_impl.security.tokens import Issuer, TokenVerifier

__all__ = ["lifespan"]

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make the API key service available to the authentication dependency."""
    settings: Settings = app.state.settings
    assert settings.api_key_pepper is not None
    app.state.api_keys = ApiKeyService(
        app.state.engine,
        base64.b64decode(settings.api_key_pepper.get_secret_value()),
        settings.api_key_cache_seconds,
        lookup_timeout=settings.commit_timeout_s,
        redis=app.state.redis,
    )
    app.state.encryptor = (
        FieldEncryptor(
            app.state.engine, LocalKeyFileProvider(settings.kek_file), settings.encrypted_fields
        )
        if settings.encrypted_fields and settings.kek_file is not None
        else None
    )
    app.state.rate_limiter = (
        RateLimiter(app.state.redis, settings) if settings.rate_limits_enabled else None
    )
    app.state.tokens = (
        TokenVerifier(
            [Issuer(**i.model_dump()) for i in settings.jwt_issuers], leeway_s=settings.jwt_leeway_s
        )
        if settings.jwt_issuers
        else None
    )
    listener = asyncio.create_task(_listen_for_revocations(app))
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await app.state.api_keys.close()


async def _listen_for_revocations(app: FastAPI) -> None:
    """Drop revoked keys from this process's cache as soon as any process revokes one."""
    service: ApiKeyService = app.state.api_keys
    while True:
        try:
            async with app.state.redis.pubsub() as pubsub:
                await pubsub.subscribe(REVOCATIONS)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        service.forget(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: the cache TTL still bounds revocation delay
            log.warning("api_keys.revocation_listener_down", error=type(exc).__name__)
            await asyncio.sleep(1.0)
