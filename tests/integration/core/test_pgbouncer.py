"""The service behind PgBouncer in transaction pooling (`AUDIT_DB_PGBOUNCER=true`)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from chaos.harness import PgBouncer
from reference_impl.api.app import create_app
from reference_impl.core.db import scoped
from reference_impl.core.embedded import EmbeddedPostgres
from reference_impl.core.migrate import upgrade
from reference_impl.core.settings import Settings
from tests.conftest import make_settings, new_tenant
from tests.support.events import make_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_ingest_reads_and_row_level_security_through_transaction_pooling(
    settings: Settings,
) -> None:
    root = Path(tempfile.mkdtemp(prefix="auditkit-pgbouncer-"))
    pg = EmbeddedPostgres(root / "postgres", settings={"fsync": "off"})
    await asyncio.to_thread(pg.start)
    bouncer = PgBouncer(root / "pgbouncer", pg.port, pool_mode="transaction")
    try:
        await asyncio.to_thread(pg.ensure_database, "auditkit")
        await asyncio.to_thread(upgrade, pg.url("auditkit"))  # migrations bypass the pooler
        await asyncio.to_thread(bouncer.start)
        app = create_app(
            make_settings(
                bouncer.url("auditkit"),
                settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
                root / "state",
                db_pgbouncer=True,
                group_commit_committers=4,
            )
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                tenant = await new_tenant(app, "pgb")
                responses = await asyncio.gather(
                    *(
                        client.post("/v1/events", json=make_event(), headers=tenant.headers)
                        for _ in range(120)
                    )
                )
                assert {r.status_code for r in responses} == {201}
                assert sorted(r.json()["seq"] for r in responses) == list(range(120))
                listed = await client.get("/v1/events?limit=500", headers=tenant.headers)
                assert len(listed.json()["items"]) == 120
                verdict = await client.get("/v1/integrity/verify", headers=tenant.headers)
                assert verdict.json()["valid"] is True
                async with scoped(app.state.engine, tenant.name) as conn:
                    role = await conn.scalar(text("SELECT current_user"))
                    unscoped_other = await conn.scalar(
                        text("SELECT count(*) FROM audit_events WHERE tenant_id <> :t"),
                        {"t": tenant.name},
                    )
                assert role == "auditkit_app"
                assert unscoped_other == 0
    finally:
        bouncer.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
