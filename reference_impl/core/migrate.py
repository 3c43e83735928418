"""Apply the Alembic migrations programmatically (`auditkit migrate`, `serve` in dev/test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from reference_impl.core.db import async_url

__all__ = [
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "is_current",
    "migrations_dir",
    "upgrade",
]


def migrations_dir() -> Path:
    """The `migrations/` folder: beside the package in a checkout, inside it in a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "migrations", package / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("migrations/ not found next to reference_impl")


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our scripts and at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Upgrade the database at ``url`` to ``revision`` (blocking; call from a thread in async)."""
    command.upgrade(alembic_config(url), revision)


def head_revisions() -> set[str]:
    """The newest revision of each branch in `migrations/versions`."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return set(script.get_heads())


async def current_revisions(url: str) -> set[str]:
    """The revisions the database at ``url`` is at (empty before the first migration)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            heads = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_heads()
            )
            return set(heads)
    finally:
        await engine.dispose()


def current_revisions_sync(url: str) -> set[str]:
    """Blocking form of `current_revisions`."""
    return asyncio.run(current_revisions(url))


def is_current(url: str) -> bool:
    """Whether the database at ``url`` has every migration applied."""
    return current_revisions_sync(url) == head_revisions()
