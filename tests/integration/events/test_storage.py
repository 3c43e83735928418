"""The schema's guarantees: partitions ahead, signing key rotation, canonical bytes stored."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.events.verification import verify_tenant
from reference_impl.integrity import KeyRing, canonicalize
from tests.conftest import TEST_KEYS, Tenant, make_settings, new_tenant
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def test_monthly_partitions_exist_ahead(superuser: asyncpg.Connection) -> None:
    rows = await superuser.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'audit_events'::regclass"
    )
    names = {r["relname"] for r in rows}
    now = datetime.now(UTC)
    expected = set()
    for ahead in range(4):
        month = (now.month - 1 + ahead) % 12 + 1
        year = now.year + (now.month - 1 + ahead) // 12
        expected.add(f"audit_events_{year}_{month:02d}")
    assert expected <= names
    assert "audit_events_default" in names
    # Idempotent: a second call creates nothing.
    assert await superuser.fetchval("SELECT audit_ensure_partitions(3)") == 0


async def test_events_land_in_the_current_month_partition(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    await client.post("/v1/events", json=make_event(), headers=tenant.headers)
    part = await superuser.fetchval(
        "SELECT tableoid::regclass::text FROM audit_events WHERE tenant_id = $1", tenant.name
    )
    assert part == f"audit_events_{datetime.now(UTC):%Y_%m}"


async def test_stored_canonical_bytes_are_rfc8785_of_the_content(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    event = make_event(details={"b": [1, 2.5, "<x>"], "a": {"z": None, "y": True}})
    await client.post("/v1/events", json=event, headers=tenant.headers)
    canonical = bytes(
        await superuser.fetchval(
            "SELECT canonical FROM audit_events WHERE tenant_id = $1", tenant.name
        )
    )
    content = json.loads(canonical)
    assert canonicalize(content) == canonical
    assert content["tenant"] == tenant.name
    assert content["details"] == {"a": {"y": True, "z": None}, "b": [1, 2.5, "&lt;x&gt;"]}
    # Every client field is covered by the hash, not a subset.
    assert set(event) <= set(content)


async def test_rotated_signing_key_keeps_old_events_verifiable(
    app: object,
    client: httpx.AsyncClient,
    settings: Settings,
    database_url: str,
    tmp_path: object,
) -> None:
    from reference_impl.api.app import create_app

    tenant = await new_tenant(app)
    old = make_settings(
        database_url,
        settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        settings.state_dir,
        active_signing_key="test-2025",
    )
    old_app = create_app(old)
    async with old_app.router.lifespan_context(old_app):
        transport = httpx.ASGITransport(app=old_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://old") as old_client:
            resp = await old_client.post("/v1/events", json=make_event(), headers=tenant.headers)
            assert resp.json()["key_id"] == "test-2025"
    resp = await client.post("/v1/events", json=make_event(), headers=tenant.headers)
    assert resp.json()["key_id"] == "test-2026"

    engine = app.state.engine  # type: ignore[attr-defined]
    secrets = {k: base64.b64decode(v) for k, v in TEST_KEYS.items()}
    both = KeyRing(secrets, "test-2026")
    assert (await verify_tenant(engine, both, tenant.name)).result.valid
    only_new = KeyRing({"test-2026": secrets["test-2026"]}, "test-2026")
    verdict = (await verify_tenant(engine, only_new, tenant.name)).result
    assert not verdict.valid
    assert verdict.first_broken_seq == 0
