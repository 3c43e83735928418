"""API key life cycle and authentication of requests."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import PLATFORM_SCOPE, scoped
from reference_impl.core.errors import DatabaseUnavailableError, UnauthorizedError
from reference_impl.security import apikeys, repository
from reference_impl.security.policy import Role

_ROLE_NAMES = frozenset(r.value for r in Role)
log = structlog.get_logger(__name__)
REVOCATIONS = "auditkit:api-key-revocations"

__all__ = ["ApiKeyService", "Caller", "CreatedKey"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant comes from here, never from a request body.

    Attributes:
        tenant: The tenant whose data the caller may touch.
        subject: `key:<prefix>` for an API key, `jwt:<sub>` for a token.
        roles: What the caller may do (see `reference_impl.security.policy`).
        credential: `api_key` or `jwt`.
    """

    tenant: str
    subject: str
    roles: frozenset[Role] = frozenset()
    credential: str = "api_key"

    @property
    def key_prefix(self) -> str:
        """The API key prefix (empty for a token)."""
        return self.subject.removeprefix("key:") if self.credential == "api_key" else ""


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key; `key` is shown to its owner once and never stored."""

    key: str
    prefix: str
    tenant: str
    name: str
    roles: tuple[str, ...]
    expires_at: datetime | None


class ApiKeyService:
    """Creates, revokes and checks API keys.

    Verified keys are cached in process for `cache_seconds`, so that an ingest request costs
    no extra database round trip. A revoked key therefore keeps working on a process for up
    to that long; set it to 0 where revocation must be immediate.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        pepper: bytes,
        cache_seconds: float = 30.0,
        stale_if_error_seconds: float = 3600.0,
        lookup_timeout: float = 5.0,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        # Authentication sits in front of ingest: a frozen database must not hold a request
        # longer than a commit would.
        self._lookup_timeout = lookup_timeout
        self._pepper = pepper
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_if_error_seconds
        # fingerprint -> (caller, fresh until, usable while the database is down until)
        self._cache: dict[bytes, tuple[Caller, float, float]] = {}
        # fingerprint -> the lookup in flight: requests that present the same key while it
        # is being checked wait for that one check instead of each taking a connection.
        self._inflight: dict[bytes, asyncio.Future[Caller]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def create(
        self,
        tenant: str,
        name: str,
        *,
        roles: Iterable[Role | str] = (Role.ingest,),
        expires_at: datetime | None = None,
    ) -> CreatedKey:
        """Create a key for ``tenant`` with ``roles``.

        Raises:
            ValueError: the tenant id or a role is not valid.
        """
        if not tenant or len(tenant) > 64 or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ValueError("a tenant id has 1 to 64 letters, digits, '-' or '_'")
        unknown = sorted(str(r) for r in roles if r not in _ROLE_NAMES)
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}: use {', '.join(sorted(_ROLE_NAMES))}")
        roles = sorted({str(r) for r in roles})
        prefix, secret = apikeys.new_key()
        async with scoped(self.engine, tenant, write=True) as conn:
            await repository.insert_key(
                conn,
                {
                    "id": uuid.uuid4(),
                    "prefix": prefix,
                    "secret_hash": apikeys.hash_secret(self._pepper, secret),
                    "tenant_id": tenant,
                    "name": name,
                    "roles": roles,
                    "expires_at": expires_at,
                },
            )
        return CreatedKey(
            apikeys.format_key(prefix, secret), prefix, tenant, name, tuple(roles), expires_at
        )

    async def revoke(self, prefix: str, tenant: str | None = None) -> bool:
        """Revoke a key by its prefix (of ``tenant``, or of any tenant when None: operators).

        Returns True if a live key was revoked.
        """
        async with scoped(self.engine, tenant or PLATFORM_SCOPE, write=True) as conn:
            revoked = await repository.revoke_key(conn, prefix, datetime.now(UTC))
        self.forget(prefix)
        if revoked is not None and self.redis is not None:
            try:  # every other process drops the key from its cache at once
                await self.redis.publish(REVOCATIONS, prefix)
            except (RedisError, OSError) as exc:
                log.warning("api_keys.revocation_not_broadcast", error=type(exc).__name__)
        return revoked is not None

    async def close(self) -> None:
        """Let background `last_used_at` updates finish (before the engine is disposed)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def forget(self, prefix: str) -> None:
        """Drop a key from this process's cache (after a revocation anywhere)."""
        for fingerprint, (caller, _, _) in list(self._cache.items()):
            if caller.key_prefix == prefix:
                self._cache.pop(fingerprint, None)

    def _touch(self, prefix: str, tenant: str) -> None:
        """Update `last_used_at` in the background: it must not slow the request down."""

        async def touch() -> None:
            try:
                async with scoped(self.engine, tenant, write=True) as conn:
                    await repository.touch_key(conn, prefix)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                log.warning("api_keys.touch_failed", error=type(exc).__name__)

        task = asyncio.create_task(touch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lookup(self, prefix: str) -> Any:
        async with self.engine.connect() as conn:
            return await repository.get_key_by_prefix(conn, prefix)

    async def authenticate(self, presented: str) -> Caller:
        """The caller a presented key belongs to.

        Raises:
            UnauthorizedError: the key is malformed, unknown, revoked or expired.
        """
        fingerprint = hashlib.sha256(presented.encode()).digest()
        cached = self._cache.get(fingerprint)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        pending = self._inflight.get(fingerprint)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request itself was cancelled
                # The request that was checking the key went away: check it here.
        future: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()
        self._inflight[fingerprint] = future
        try:
            caller = await self._authenticate(presented, fingerprint, cached, now)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: there may be no one waiting
            raise
        else:
            future.set_result(caller)
            return caller
        finally:
            if self._inflight.get(fingerprint) is future:
                del self._inflight[fingerprint]

    async def _authenticate(
        self,
        presented: str,
        fingerprint: bytes,
        cached: tuple[Caller, float, float] | None,
        now: float,
    ) -> Caller:
        parsed = apikeys.parse_key(presented)
        if parsed is None:
            raise UnauthorizedError("the API key is malformed")
        prefix, secret = parsed
        try:
            row = await asyncio.wait_for(self._lookup(prefix), self._lookup_timeout)
        except (SQLAlchemyError, OSError, TimeoutError):
            # Stale-if-error: while the database is down a key checked recently keeps
            # working, so queued ingest goes on; nobody can revoke a key meanwhile anyway.
            if cached is not None and cached[2] > now:
                return cached[0]
            raise DatabaseUnavailableError("cannot check the API key now; retry") from None
        if row is None or not apikeys.secrets_match(self._pepper, secret, bytes(row.secret_hash)):
            raise UnauthorizedError("the API key is not valid")
        if row.revoked_at is not None:
            raise UnauthorizedError("the API key was revoked")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise UnauthorizedError("the API key has expired")
        caller = Caller(
            tenant=row.tenant_id,
            subject=f"key:{prefix}",
            roles=frozenset(Role(r) for r in row.roles if r in _ROLE_NAMES),
        )
        self._touch(prefix, row.tenant_id)
        ttl = self._cache_seconds
        if row.expires_at is not None:
            ttl = min(ttl, (row.expires_at - datetime.now(UTC)).total_seconds())
        if ttl > 0 or self._stale_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            stale = now + self._stale_seconds
            if row.expires_at is not None:
                stale = min(stale, now + (row.expires_at - datetime.now(UTC)).total_seconds())
            self._cache[fingerprint] = (caller, now + ttl, stale)
        return caller
