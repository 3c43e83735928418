"""A committer's kept connection: reused while sound, replaced once broken or old."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import HeldConnection, create_engine
from reference_impl.core.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, purpose="ingest")
    yield engine
    await engine.dispose()


async def _backend(held: HeldConnection) -> int:
    async with held.transaction() as driver:
        assert driver.is_in_transaction()
        return int(await driver.fetchval("SELECT pg_backend_pid()"))


async def _break(held: HeldConnection) -> None:
    async with held.transaction() as driver:
        driver.terminate()
        await driver.fetchval("SELECT 1")


async def _divide_by_zero(held: HeldConnection) -> None:
    async with held.transaction() as driver:
        await driver.fetchval("SELECT 1 / 0")


@pytest.fixture
async def held(engine: AsyncEngine) -> AsyncIterator[HeldConnection]:
    held = HeldConnection(engine)
    yield held
    await held.release()


async def test_transactions_run_on_one_kept_connection(
    engine: AsyncEngine, held: HeldConnection
) -> None:
    first = await _backend(held)
    assert [await _backend(held) for _ in range(3)] == [first] * 3
    # Kept, not pooled: the pool has it checked out between transactions.
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await held.release()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_broken_connection_is_replaced_for_the_next_transaction(
    held: HeldConnection,
) -> None:
    before = await _backend(held)
    with pytest.raises(asyncpg.InterfaceError):
        await _break(held)
    assert await _backend(held) != before


async def test_a_failed_statement_rolls_back_and_keeps_the_connection(
    held: HeldConnection,
) -> None:
    before = await _backend(held)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await _divide_by_zero(held)
    # The rollback reached the server: the connection is sound and kept.
    assert await _backend(held) == before


async def test_an_old_connection_goes_back_to_the_pool(
    engine: AsyncEngine, held: HeldConnection
) -> None:
    returned: list[object] = []
    event.listen(engine.sync_engine.pool, "checkin", lambda *_: returned.append(1))
    for _ in range(3):
        await _backend(held)
    assert returned == []  # young: kept
    held.max_age_s = 0.0
    for _ in range(3):
        await _backend(held)
    # Each transaction found the kept connection too old, gave it back and took one.
    assert len(returned) == 3
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
