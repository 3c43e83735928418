"""The ingest transaction on the driver connection: what it reads, plans and maps."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import httpx
import orjson
import pytest
from sqlalchemy import text

from reference_impl.core.db import create_engine, driver_connection, scoped
from reference_impl.core.errors import DatabaseUnavailableError
from reference_impl.core.settings import Settings
from reference_impl.events.batch_read import read_batch_state
from reference_impl.events.ingest import GroupCommitter
from reference_impl.events.validation import parse_event
from reference_impl.events.verification import verify_tenant
from tests.conftest import Tenant, new_tenant
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def test_ingest_connections_plan_each_statement_for_its_values(settings: Settings) -> None:
    # A generic plan kept from an empty table would scan the whole index at every commit.
    for purpose, expected in (("ingest", "force_custom_plan"), ("read", "auto")):
        engine = create_engine(settings, purpose=purpose)
        try:
            async with engine.connect() as conn:
                mode = await conn.scalar(text("SELECT current_setting('plan_cache_mode')"))
        finally:
            await engine.dispose()
        assert mode == expected, purpose


async def test_batch_state_holds_stored_entries_and_frontiers(
    app: object, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    receipts = []
    for _ in range(3):
        response = await client.post("/v1/events", json=make_event(), headers=tenant.headers)
        assert response.status_code == 201
        receipts.append(response.json())
    empty = await new_tenant(app)
    other = await new_tenant(app)
    foreign = await client.post("/v1/events", json=make_event(), headers=other.headers)
    unknown = uuid.uuid4()
    keys = [(tenant.name, uuid.UUID(r["event_id"])) for r in receipts]
    keys += [(tenant.name, unknown), (empty.name, uuid.UUID(foreign.json()["event_id"]))]

    engine = app.state.ingest_engine  # type: ignore[attr-defined]
    async with scoped(engine, [tenant.name, empty.name], write=True) as conn:
        state = await read_batch_state(
            await driver_connection(conn), keys, [tenant.name, empty.name]
        )

    # Only this tenant's stored ids come back; an id stored under another tenant does not.
    assert set(state.existing) == set(keys[:3])
    for receipt in receipts:
        entry = state.existing[(tenant.name, uuid.UUID(receipt["event_id"]))]
        assert (entry.seq, entry.hash.hex(), entry.key_id) == (
            receipt["seq"],
            receipt["hash"],
            receipt["key_id"],
        )
    # A tenant with events has a frontier of that size; one without has none yet.
    assert state.frontiers[tenant.name].size == 3
    assert all(len(h) == 32 for h in state.frontiers[tenant.name].hashes)
    assert empty.name not in state.frontiers


async def test_a_row_the_database_refuses_fails_only_its_own_request(
    app: object, settings: Settings, tenant: Tenant
) -> None:
    good = parse_event(orjson.dumps(make_event()), settings)
    valid = parse_event(orjson.dumps(make_event()), settings)
    # PostgreSQL text cannot hold NUL (SQLSTATE 22021): the driver's own error, raised by
    # the statement that writes the whole batch.
    bad = dataclasses.replace(valid, content={**valid.content, "action": "fhir.\x00read"})
    committer: GroupCommitter = app.state.committer  # type: ignore[attr-defined]

    stored, refused = await asyncio.gather(
        committer.submit(tenant.name, [good]),
        committer.submit(tenant.name, [bad]),
        return_exceptions=True,
    )

    assert not isinstance(stored, BaseException)
    assert stored[0].created and stored[0].receipt.seq == 0
    assert isinstance(refused, DatabaseUnavailableError)
    verification = await verify_tenant(
        app.state.engine,  # type: ignore[attr-defined]
        app.state.keyring,  # type: ignore[attr-defined]
        tenant.name,
    )
    assert verification.result.valid
    assert verification.result.checked == 1


async def test_the_driver_is_handed_out_only_inside_a_begun_transaction(
    app: object, tenant: Tenant
) -> None:
    # SQLAlchemy begins the driver's transaction at the first statement: before it, the
    # driver would commit each statement on its own.
    engine = app.state.ingest_engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        with pytest.raises(RuntimeError, match="run a statement"):
            await driver_connection(conn)
    async with scoped(engine, [tenant.name], write=True) as conn:
        driver = await driver_connection(conn)
        assert driver.is_in_transaction()
