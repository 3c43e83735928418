"""Alembic environment: runs migrations over the service's asyncpg engine.

The database URL comes from, in order: `config.attributes["url"]` (set by `auditkit
migrate` and the tests), then `AUDIT_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from reference_impl.core.db import Base, async_url
from reference_impl.events import models as _event_models  # noqa: F401  (register tables)
from reference_impl.security import models as _security_models  # noqa: F401
from reference_impl.transparency import models as _transparency_models  # noqa: F401

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("AUDIT_DATABASE_URL")
    if not url:
        raise SystemExit("set AUDIT_DATABASE_URL (or run `auditkit migrate`)")
    return async_url(url)


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (`alembic upgrade head --sql`)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    """Run migrations in one transaction per revision over an async connection."""
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            # Serialise concurrent `migrate` runs (several replicas starting at once).
            await connection.exec_driver_sql("SELECT pg_advisory_lock(7263512)")
            await connection.run_sync(_run)
            await connection.exec_driver_sql("SELECT pg_advisory_unlock(7263512)")
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(run_migrations_online())
