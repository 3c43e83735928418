"""The migration chain: one head, up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from reference_impl.core.migrate import alembic_config, head_revisions, upgrade
from tests.support.backends import Backends

pytestmark = pytest.mark.integration


def test_the_chain_has_one_head_and_date_named_files() -> None:
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    assert len(head_revisions()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    for rev in revisions:
        name = rev.path.rsplit("/", 1)[1]
        assert name[:4].isdigit() and name[4] == "_", name  # YYYY_MM_DD_HHMM-<rev>_<slug>.py
        assert rev.module.downgrade.__doc__, f"{name} has no documented downgrade"


def test_upgrade_downgrade_upgrade(backends: Backends) -> None:
    name = f"auditkit_mig_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(backends.postgres_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = backends.postgres_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    command.downgrade(alembic_config(url), "base")

    async def tables() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    assert asyncio.run(tables()) <= {"alembic_version"}
    upgrade(url)
    assert {"audit_events", "merkle_nodes", "data_keys", "tenant_integrity"} <= asyncio.run(
        tables()
    )
