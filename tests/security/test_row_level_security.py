"""PostgreSQL itself keeps tenants apart: the service role cannot read or write another
tenant's rows even with a query that forgets its tenant filter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.conftest import Tenant, new_tenant
from tests.support.events import make_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def service_role(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection working as the service does: SET ROLE auditkit_app."""
    conn = await asyncpg.connect(database_url, server_settings={"role": "auditkit_app"})
    try:
        yield conn
    finally:
        await conn.close()


async def _two_tenants(app: object, client: httpx.AsyncClient) -> tuple[Tenant, Tenant]:
    a, b = await new_tenant(app, "rls"), await new_tenant(app, "rls")
    for tenant in (a, b):
        events = [make_event() for _ in range(3)]
        await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    return a, b


async def test_unscoped_query_sees_nothing_and_scoped_query_one_tenant(
    app: object, client: httpx.AsyncClient, service_role: asyncpg.Connection
) -> None:
    a, b = await _two_tenants(app, client)
    # No scope declared: not a single row, although the query has no filter at all.
    assert await service_role.fetchval("SELECT count(*) FROM audit_events") == 0
    assert await service_role.fetchval("SELECT count(*) FROM api_keys") == 0
    async with service_role.transaction():
        await service_role.execute("SELECT set_config('auditkit.tenants', $1, true)", a.name)
        tenants = await service_role.fetch("SELECT DISTINCT tenant_id FROM audit_events")
        assert [r["tenant_id"] for r in tenants] == [a.name]
        assert (
            await service_role.fetchval(
                "SELECT count(*) FROM audit_event_index WHERE tenant_id = $1", b.name
            )
            == 0
        )


async def test_service_role_cannot_write_into_another_tenant(
    app: object, client: httpx.AsyncClient, service_role: asyncpg.Connection
) -> None:
    a, b = await _two_tenants(app, client)
    async with service_role.transaction():
        await service_role.execute("SELECT set_config('auditkit.tenants', $1, true)", a.name)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await service_role.execute(
                "INSERT INTO chain_heads (tenant_id, next_seq, head_hash) VALUES ($1, 0, $2)",
                b.name + "-x",
                bytes(32),
            )


async def test_service_role_cannot_switch_security_off_or_read_partitions(
    service_role: asyncpg.Connection,
) -> None:
    await service_role.execute("SET row_security = off")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_role.fetch("SELECT * FROM audit_events LIMIT 1")
    await service_role.execute("RESET row_security")
    partition = await service_role.fetchval(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'audit_events'::regclass LIMIT 1"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_role.fetch(f'SELECT * FROM "{partition}" LIMIT 1')


async def test_api_key_lookup_returns_only_the_named_key(
    app: object, service_role: asyncpg.Connection
) -> None:
    tenant = await new_tenant(app, "lookup")
    prefix = tenant.key.split("_")[1]
    rows = await service_role.fetch("SELECT tenant_id FROM auditkit_api_key($1)", prefix)
    assert [r["tenant_id"] for r in rows] == [tenant.name]
    assert await service_role.fetch("SELECT * FROM auditkit_api_key('%')") == []


async def test_the_documented_grant_lets_a_login_user_work_as_the_service(
    superuser: asyncpg.Connection, database_url: str
) -> None:
    from tests.docs.blocks import docs_block

    grant = docs_block("guides/deployment-patterns.md", "dp-grant-role")
    exists = await superuser.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'auditkit'")
    if not exists:
        await superuser.execute("CREATE ROLE auditkit LOGIN")
    await superuser.execute(grant)
    login = database_url.replace("postgresql://postgres@", "postgresql://auditkit@")
    conn = await asyncpg.connect(login, server_settings={"role": "auditkit_app"})
    try:
        assert await conn.fetchval("SELECT current_user") == "auditkit_app"
        assert await conn.fetchval("SELECT count(*) FROM audit_events") == 0
    finally:
        await conn.close()
