"""For any stored log and any single tampering in PostgreSQL, verify names seq and kind."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import new_tenant
from tests.support import tamper
from tests.support.events import make_event

pytestmark = [pytest.mark.integration, pytest.mark.property]


@st.composite
def attacks(draw: st.DrawFn) -> tuple[int, str, tuple[int, ...], tuple[int, str]]:
    """(log size, attack, its arguments, expected (first broken seq, kind))."""
    n = draw(st.integers(min_value=2, max_value=16))
    kind = draw(
        st.sampled_from(
            [
                "modify_canonical",
                "modify_column",
                "modify_signature",
                "delete",
                "delete_and_renumber",
                "truncate_from",
                "insert_duplicate",
                "insert_renumbered",
                "append_forged",
                "swap",
            ]
        )
    )
    k = draw(st.integers(min_value=0, max_value=n - 1))
    if kind.startswith("modify"):
        return n, kind, (k,), (k, "modified")
    if kind in ("delete", "delete_and_renumber"):
        return n, kind, (k,), (k, "truncated" if k == n - 1 else "deleted")
    if kind == "truncate_from":
        return n, kind, (k,), (k, "truncated")
    if kind in ("insert_duplicate", "insert_renumbered"):
        return n, kind, (k,), (k, "inserted")
    if kind == "append_forged":
        return n, kind, (), (n, "inserted")
    a = draw(st.integers(min_value=0, max_value=n - 2))
    b = draw(st.integers(min_value=a + 1, max_value=n - 1))
    return n, kind, (a, b), (a, "reordered")


async def _apply(conn: asyncpg.Connection, tenant: str, kind: str, args: tuple[int, ...]) -> None:
    if kind == "insert_duplicate":
        await tamper.insert_forged(conn, tenant, args[0], renumber=False)
    elif kind == "insert_renumbered":
        await tamper.insert_forged(conn, tenant, args[0], renumber=True)
    else:
        await getattr(tamper, kind)(conn, tenant, *args)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=attacks(), split=st.integers(min_value=1, max_value=4))
async def test_any_single_tamper_is_located(
    app: object,
    client: httpx.AsyncClient,
    superuser: asyncpg.Connection,
    case: tuple[int, str, tuple[int, ...], tuple[int, str]],
    split: int,
) -> None:
    n, kind, args, expected = case
    tenant = await new_tenant(app, "prop")
    events = [make_event() for _ in range(n)]
    for i in range(0, n, split):  # several transactions: rows differ in recorded_at
        resp = await client.post(
            "/v1/events:batch", json={"events": events[i : i + split]}, headers=tenant.headers
        )
        assert resp.status_code == 201
    await _apply(superuser, tenant.name, kind, args)
    verdict = (await client.get("/v1/integrity/verify", headers=tenant.headers)).json()
    assert not verdict["valid"]
    assert (verdict["first_broken_seq"], verdict["kind"]) == expected, verdict["detail"]
