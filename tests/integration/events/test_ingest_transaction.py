"""The ingest transaction on the driver connection: what it reads, plans and maps."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import text

from reference_impl.core.db import create_engine, driver_connection, driver_transaction, scoped
from reference_impl.core.errors import DatabaseUnavailableError
from reference_impl.core.settings import Settings
from reference_impl.events.batch_read import BatchState, open_batch, stored_leaves
from reference_impl.events.batch_write import write_batch
from reference_impl.events.ingest import GroupCommitter, plan_batch
from reference_impl.events.staging import stage
from reference_impl.events.validation import parse_event
from reference_impl.events.verification import verify_tenant
from reference_impl.transparency.service import extend_trees
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


# Sequential scans of the current transaction, per table, and index scans of its indexes.
_SCANS = """
SELECT c.relname, pg_stat_get_xact_numscans(c.oid) AS seq,
       (SELECT coalesce(sum(pg_stat_get_xact_numscans(i.indexrelid)), 0)
        FROM pg_index AS i WHERE i.indrelid = c.oid) AS idx
FROM pg_class AS c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
"""


async def test_the_ingest_functions_find_rows_by_key_on_plans_they_keep(
    app: object, client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    # Their plans are made once per connection, so none of them may depend on the size
    # of a table: the test database's tables are small, where a scan would be the cheaper
    # plan, and every lookup, lock and update must still go by key.
    for _ in range(2):
        response = await client.post("/v1/events", json=make_event(), headers=tenant.headers)
        assert response.status_code == 201
    engine = app.state.ingest_engine  # type: ignore[attr-defined]
    async with driver_transaction(engine) as driver:
        for _ in range(7):  # past the five runs after which a plan may be kept anyway
            event = parse_event(orjson.dumps(make_event()), settings)
            state = await open_batch(driver, [tenant.name], [(tenant.name, event.event_id)])
            await _write_one(app, driver, tenant.name, event, state)
        scans = {name: (seq, idx) for name, seq, idx in await driver.fetch(_SCANS)}
        settings_of = {
            row["proname"]: row["proconfig"]
            for row in await driver.fetch(
                "SELECT proname, proconfig FROM pg_proc"
                " WHERE proname IN ('auditkit_open_batch', 'auditkit_write_batch')"
            )
        }

    assert {name for name, (seq, _) in scans.items() if seq} == set()
    for table in ("chain_heads", "audit_event_index", "merkle_frontiers"):
        assert scans[table][1] >= 7, table
    for config in settings_of.values():
        assert "plan_cache_mode=force_generic_plan" in config
    assert settings_of.keys() == {"auditkit_open_batch", "auditkit_write_batch"}
    # The rest of the transaction plans as before: the settings end with each call.
    assert await _plan_cache_mode(engine) == "force_custom_plan"


async def _plan_cache_mode(engine: Any) -> str:
    async with driver_transaction(engine) as driver:
        await driver.fetch(
            "SELECT * FROM auditkit_open_batch($1::text[], $2::text[], $3::uuid[])", [], [], []
        )
        return str(await driver.fetchval("SELECT current_setting('plan_cache_mode')"))


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
    async with driver_transaction(engine) as driver:
        state = await open_batch(driver, [tenant.name, empty.name], keys)
        scope = await driver.fetchval("SELECT current_setting('auditkit.tenants')")

    # The transaction is scoped to the batch's tenants; a tenant that never stored an
    # event has no chain head yet.
    assert scope == ",".join(sorted([tenant.name, empty.name]))
    assert set(state.heads) == {tenant.name}
    assert state.heads[tenant.name].next_seq == 3
    assert state.heads[tenant.name].head_hash.hex() == receipts[-1]["hash"]

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


async def _open_alone(engine: Any, tenant: str, key: tuple[str, uuid.UUID]) -> BatchState:
    async with driver_transaction(engine) as driver:
        return await open_batch(driver, [tenant], [key])


async def _write_one(
    app: Any, driver: asyncpg.Connection, tenant: str, event: Any, state: BatchState
) -> None:
    """Plan ``event`` on the opened ``state`` and write it, as a commit of one event does."""
    plan = plan_batch(
        [(tenant, stage(tenant, [event]))],
        state.heads,
        state.existing,
        app.state.keyring,
        datetime.now(UTC),
    )
    tree = await extend_trees(plan.rows.leaves(), state.frontiers, partial(stored_leaves, driver))
    await write_batch(driver, plan.rows, tree.nodes, tree.frontiers, plan.heads)


async def test_a_waiting_batch_reads_what_the_lock_holder_committed(
    app: object, client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    # The read runs after the lock, in its own snapshot: a batch that waited for the head
    # sees the head, the entries and the frontier the previous holder committed.
    assert (await client.post("/v1/events", json=make_event(), headers=tenant.headers)).is_success
    engine = app.state.ingest_engine  # type: ignore[attr-defined]
    event = parse_event(orjson.dumps(make_event()), settings)
    key = (tenant.name, event.event_id)

    async with driver_transaction(engine) as holder:
        held = await open_batch(holder, [tenant.name], [key])
        waiter = asyncio.create_task(_open_alone(engine, tenant.name, key))
        await asyncio.sleep(0.3)
        assert not waiter.done(), "the second batch did not wait for the chain-head lock"
        await _write_one(app, holder, tenant.name, event, held)
    waited = await waiter

    assert key not in held.existing
    assert waited.existing[key].seq == held.heads[tenant.name].next_seq
    assert waited.heads[tenant.name].next_seq == held.heads[tenant.name].next_seq + 1
    assert waited.frontiers[tenant.name].size == held.frontiers[tenant.name].size + 1


async def test_a_connection_that_broke_in_a_transaction_is_not_handed_out_again(
    app: object,
) -> None:
    engine = app.state.ingest_engine  # type: ignore[attr-defined]

    async def break_the_connection() -> None:
        async with driver_transaction(engine) as driver:
            driver.terminate()
            await driver.fetchval("SELECT 1")

    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await break_the_connection()

    # Every connection the pool holds, at once: the broken one would be among them.
    async def one() -> int:
        async with driver_transaction(engine) as driver:
            await asyncio.sleep(0.05)
            return int(await driver.fetchval("SELECT 1"))

    assert await asyncio.gather(*(one() for _ in range(engine.pool.size()))) == [1] * (
        engine.pool.size()
    )


async def test_a_transaction_that_could_not_roll_back_does_not_keep_its_locks(
    app: object, client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    # The block fails while a statement is still running on the connection, so the
    # driver cannot send `ROLLBACK` (as after a timeout on a frozen server). Were the
    # connection pooled again, the server would keep the transaction open and its head lock
    # would stop every writer of the tenant.
    assert (await client.post("/v1/events", json=make_event(), headers=tenant.headers)).is_success
    engine = create_engine(settings, purpose="ingest")
    running: list[asyncio.Future[Any]] = []

    async def fail_while_a_statement_runs() -> None:
        async with driver_transaction(engine) as driver:
            await open_batch(driver, [tenant.name], [])
            running.append(asyncio.ensure_future(driver.fetchval("SELECT pg_sleep(0.5)")))
            await asyncio.sleep(0.1)
            raise RuntimeError("the request failed mid-transaction")

    try:
        with pytest.raises((RuntimeError, asyncpg.InterfaceError)):
            await fail_while_a_statement_runs()
        await asyncio.gather(*running, return_exceptions=True)
        async with driver_transaction(app.state.ingest_engine) as other:  # type: ignore[attr-defined]
            await other.execute("SET LOCAL lock_timeout = '3s'")
            state = await open_batch(other, [tenant.name], [])
        assert tenant.name in state.heads
    finally:
        await engine.dispose()
