"""Database engine, declarative base and the unit of work.

All tables share one `MetaData` with an explicit naming convention, so constraint names are
stable across migrations. Services never commit: the request or the task that owns a unit of
work does (`unit_of_work`).
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from reference_impl.core.settings import Settings

__all__ = [
    "NAMING_CONVENTION",
    "PLATFORM_SCOPE",
    "POOL_RECYCLE_S",
    "Base",
    "HeldConnection",
    "async_url",
    "create_engine",
    "driver_connection",
    "driver_transaction",
    "scope",
    "scoped",
    "unit_of_work",
]

# Pooled connections older than this are closed and opened again (server-side state and
# memory do not accumulate over a process's life).
POOL_RECYCLE_S = 1800

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every model; relationships must be declared `lazy="raise"`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def async_url(url: str) -> str:
    """Turn any PostgreSQL URL into the asyncpg dialect SQLAlchemy expects."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql://",
        "postgres://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("AUDIT_DATABASE_URL must be a postgresql:// URL")


def create_engine(settings: Settings, *, purpose: str = "read") -> AsyncEngine:
    """An async engine, sized and time-limited from settings.

    The service keeps two pools: `read` for queries, exports and verification, and `ingest`
    for the group committers. Heavy reads then cannot take the connections ingest needs,
    and ingest gets a short command timeout: a frozen or unreachable server fails a commit
    within `commit_timeout_s` (and trips the breaker) instead of hanging requests.
    """
    if settings.database_url is None:
        raise ValueError("no database URL resolved")
    ingest = purpose == "ingest"
    timeout = settings.commit_timeout_s if ingest else settings.db_statement_timeout_ms / 1000 + 1
    server_settings = {"application_name": f"auditkit-{purpose}", "timezone": "UTC"}
    connect_args: dict[str, Any] = {}
    if settings.db_pgbouncer:
        # Behind PgBouncer in transaction pooling, a session setting or a named prepared
        # statement would leak into (or be missing from) the next transaction's server
        # connection: no statement cache, unique statement names, and the role and the
        # timeout set per transaction by `scope()` instead of at connect.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = lambda: f"__ak_{uuid.uuid4().hex}__"
    else:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
        if ingest:
            # The ingest statements stay prepared for the connection's life, and after five
            # runs PostgreSQL may keep one generic plan for them, costed with the statistics
            # of that moment. A service started on an empty database then looks up existing
            # events by scanning the whole index table at every commit, long after the table
            # has grown (measured: 3.4 ms instead of 0.02 ms per lookup, under the chain-head
            # lock). Their arrays hold 1 to thousands of rows, which only a plan made for the
            # values at hand gets right. (Behind PgBouncer nothing is reused: the same holds.)
            # The two statements of every commit call functions that keep their own plans,
            # which go by primary key at any size (migration 0007).
            server_settings["plan_cache_mode"] = "force_custom_plan"
        if settings.database_role:
            server_settings["role"] = settings.database_role
    url = async_url(settings.database_url.get_secret_value())
    if settings.db_pgbouncer:
        # SQLAlchemy's own per-connection statement cache too: a statement prepared on one
        # server connection does not exist on the next transaction's.
        url += ("&" if "?" in url else "?") + "prepared_statement_cache_size=0"
    engine = create_async_engine(
        url,
        pool_size=settings.group_commit_committers + 2 if ingest else settings.db_pool_size,
        max_overflow=2 if ingest else settings.db_max_overflow,
        # The ingest path retries a failed commit anyway; a ping per checkout would cost
        # every batch a round trip.
        pool_pre_ping=not ingest,
        pool_recycle=POOL_RECYCLE_S,
        pool_timeout=settings.commit_timeout_s,
        connect_args={
            "server_settings": server_settings,
            "timeout": settings.commit_timeout_s,
            "command_timeout": timeout,
            **connect_args,
        },
    )
    if settings.db_pgbouncer:
        _PER_TRANSACTION[engine.sync_engine] = {
            "role": settings.database_role or "",
            "statement_timeout": str(settings.db_statement_timeout_ms),
        }
    return engine


# Settings `scope()` repeats in every transaction, for engines behind transaction pooling.
_PER_TRANSACTION: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


PLATFORM_SCOPE = "*"


# --8<-- [start:scope]
async def scope(conn: AsyncConnection, tenants: Iterable[str] | str) -> None:
    """Declare the tenants this transaction works for; row-level security enforces it.

    ``tenants`` is one tenant id, several, or `PLATFORM_SCOPE` for an explicit
    cross-tenant operation. The setting is transaction-local, so a pooled connection never
    carries one request's scope into the next.
    """
    value = tenants if isinstance(tenants, str) else ",".join(sorted(set(tenants)))
    local = _PER_TRANSACTION.get(conn.sync_engine)
    if local is None:
        await conn.execute(
            text("SELECT set_config('auditkit.tenants', :tenants, true)"), {"tenants": value}
        )
        return
    await conn.execute(
        text(
            "SELECT set_config('auditkit.tenants', :tenants, true),"
            " set_config('statement_timeout', :timeout, true),"
            " CASE WHEN :role = '' THEN '' ELSE set_config('role', :role, true) END"
        ),
        {"tenants": value, "timeout": local["statement_timeout"], "role": local["role"]},
    )


# --8<-- [end:scope]


@asynccontextmanager
async def scoped(
    engine: AsyncEngine, tenants: Iterable[str] | str, *, write: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction scoped to ``tenants`` (committed on exit if ``write``)."""
    async with engine.begin() if write else engine.connect() as conn:
        await scope(conn, tenants)
        yield conn


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, in the transaction ``conn`` has begun.

    For the few fixed statements of the ingest transaction: through SQLAlchemy's execution
    layer each one costs about twice the CPU of the driver call itself (measured: 1.78 ms
    against 0.86 ms for a transaction of five), and that CPU is spent while the chain-head
    lock is held. Errors then arrive as asyncpg's own exceptions, which the caller maps.

    SQLAlchemy begins the driver's transaction at the first statement, not at `begin()`:
    run one through ``conn`` first (`scope` does), or the driver would autocommit.

    Raises:
        RuntimeError: ``conn`` has no transaction on the driver yet.
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("run a statement through the connection before using its driver")
    return driver


# --8<-- [start:driver-transaction]
@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[Any]:
    """An asyncpg connection from ``engine``'s pool, in a transaction asyncpg manages.

    For the ingest transaction, whose fixed statements go straight to the driver (see
    `driver_connection` for why). `BEGIN` is sent when the block starts, `COMMIT` when it
    ends and `ROLLBACK` if it raises. The caller's first statement must declare the tenant
    scope (`events.batch_read.open_batch` does, in the same round trip as its lock and
    read); behind PgBouncer the per-transaction settings of `scope` are sent before it.
    A connection that broke, timed out or is still in a transaction after an error is
    invalidated, so the pool never hands it out again.
    """
    async with engine.connect() as conn, _driver_transaction_on(engine, conn) as driver:
        yield driver


@asynccontextmanager
async def _driver_transaction_on(engine: AsyncEngine, conn: AsyncConnection) -> AsyncIterator[Any]:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None  # a checked-out connection always has its driver
    try:
        async with driver.transaction():
            local = _PER_TRANSACTION.get(engine.sync_engine)
            if local is not None:
                await driver.execute(
                    "SELECT set_config('statement_timeout', $1, true),"
                    " CASE WHEN $2 = '' THEN '' ELSE set_config('role', $2, true) END",
                    local["statement_timeout"],
                    local["role"],
                )
            yield driver
    except BaseException as exc:
        # A connection whose transaction did not end cleanly must not be reused: after a
        # timeout (a frozen or overloaded server) the rollback may never have reached
        # the server, which would go on holding the transaction and its chain-head
        # locks while the pool handed the connection out again. Closing it makes the
        # server abort the transaction.
        if (
            driver.is_closed()
            or driver.is_in_transaction()
            or isinstance(exc, TimeoutError | OSError | asyncpg.InterfaceError)
        ):
            await conn.invalidate()
        raise


# --8<-- [end:driver-transaction]


# --8<-- [start:held-connection]
class HeldConnection:
    """A connection of ``engine``'s pool that one long-lived task keeps between transactions.

    A group committer runs one transaction after another. Checking a connection out of
    the pool and back in around each cost SQLAlchemy's pool about 100 µs of CPU: a sixth of
    what a one-event commit costs its process (measured: 590 → 490 µs per commit). The
    committer keeps one instead, in transactions exactly as `driver_transaction` runs them.
    The connection goes back to the pool, and the next transaction takes another, when it
    was invalidated (broken, timed out, or left in a transaction), and once it is older
    than ``max_age_s``, so a kept connection ages out as a pooled one does.
    """

    def __init__(self, engine: AsyncEngine, *, max_age_s: float = POOL_RECYCLE_S) -> None:
        self.engine = engine
        self.max_age_s = max_age_s
        self._conn: AsyncConnection | None = None
        self._taken_at = 0.0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """The kept connection's driver, in a transaction (see `driver_transaction`)."""
        conn = await self._connection()
        try:
            async with _driver_transaction_on(self.engine, conn) as driver:
                yield driver
        finally:
            if conn.invalidated:
                await self.release()

    async def _connection(self) -> AsyncConnection:
        if self._conn is not None and time.monotonic() - self._taken_at > self.max_age_s:
            await self.release()
        if self._conn is None:
            self._conn = await self.engine.connect()
            self._taken_at = time.monotonic()
        return self._conn

    async def release(self) -> None:
        """Give the connection back to the pool (the next transaction takes one again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


# --8<-- [end:held-connection]


@asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    async with engine.begin() as conn:
        yield conn
