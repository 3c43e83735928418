"""Tampering done directly in PostgreSQL by a superuser is caught, at the right seq and kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from tests.conftest import Tenant
from tests.support import tamper
from tests.support.events import make_event

pytestmark = pytest.mark.integration

Tamper = Callable[[asyncpg.Connection, str], Awaitable[None]]

CASES: list[tuple[str, Tamper, int, str]] = [
    ("canonical edited", lambda c, t: tamper.modify_canonical(c, t, 3), 3, "modified"),
    ("query column edited", lambda c, t: tamper.modify_column(c, t, 4), 4, "modified"),
    ("signature replaced", lambda c, t: tamper.modify_signature(c, t, 0), 0, "modified"),
    ("row deleted", lambda c, t: tamper.delete(c, t, 2), 2, "deleted"),
    (
        "row deleted, later renumbered",
        lambda c, t: tamper.delete_and_renumber(c, t, 2),
        2,
        "deleted",
    ),
    (
        "forged row, duplicate seq",
        lambda c, t: tamper.insert_forged(c, t, 5, renumber=False),
        5,
        "inserted",
    ),
    (
        "forged row, renumbered",
        lambda c, t: tamper.insert_forged(c, t, 1, renumber=True),
        1,
        "inserted",
    ),
    ("forged row appended", lambda c, t: tamper.append_forged(c, t), 8, "inserted"),
    ("rows swapped", lambda c, t: tamper.swap(c, t, 2, 6), 2, "reordered"),
    ("adjacent rows swapped", lambda c, t: tamper.swap(c, t, 4, 5), 4, "reordered"),
    ("tail truncated", lambda c, t: tamper.truncate_from(c, t, 6), 6, "truncated"),
    ("last row deleted", lambda c, t: tamper.delete(c, t, 7), 7, "truncated"),
]


async def _log_of_eight(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(2):  # two transactions, so rows differ in recorded_at too
        events = [make_event() for _ in range(4)]
        resp = await client.post(
            "/v1/events:batch", json={"events": events}, headers=tenant.headers
        )
        assert resp.status_code == 201


@pytest.mark.parametrize(("name", "attack", "seq", "kind"), CASES, ids=[c[0] for c in CASES])
async def test_verify_names_first_broken_seq_and_kind(
    client: httpx.AsyncClient,
    tenant: Tenant,
    superuser: asyncpg.Connection,
    name: str,
    attack: Tamper,
    seq: int,
    kind: str,
) -> None:
    await _log_of_eight(client, tenant)
    before = await client.get("/v1/integrity/verify", headers=tenant.headers)
    assert before.json()["valid"] is True
    await attack(superuser, tenant.name)
    after = (await client.get("/v1/integrity/verify", headers=tenant.headers)).json()
    assert after["valid"] is False, name
    assert (after["first_broken_seq"], after["kind"]) == (seq, kind), after["detail"]


async def test_history_cannot_be_changed_by_the_service_or_the_owner(
    client: httpx.AsyncClient, tenant: Tenant, app: object, superuser: asyncpg.Connection
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from reference_impl.core.db import scoped

    await _log_of_eight(client, tenant)
    statements = (
        "UPDATE audit_events SET outcome = 'failure' WHERE tenant_id = $1",
        "DELETE FROM audit_events WHERE tenant_id = $1",
        "DELETE FROM audit_event_index WHERE tenant_id = $1",
        "TRUNCATE audit_events",
        "TRUNCATE audit_event_index",
    )
    # The service's role has no right to change history at all ...
    engine = app.state.engine  # type: ignore[attr-defined]
    for sql in statements:
        with pytest.raises(DBAPIError, match="permission denied"):
            async with scoped(engine, tenant.name, write=True) as conn:
                await conn.execute(text(sql.replace("$1", ":t")), {"t": tenant.name})
    # ... and even the owner is stopped by the append-only triggers.
    for sql in statements:
        args = (tenant.name,) if "$1" in sql else ()
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await superuser.execute(sql, *args)
    verdict = await client.get("/v1/integrity/verify", headers=tenant.headers)
    assert verdict.json() == {**verdict.json(), "valid": True, "checked": 8}
