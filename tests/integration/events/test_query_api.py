"""GET /v1/events, /v1/events/{id} and /v1/events/export."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import Tenant
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def _ingest(client: httpx.AsyncClient, tenant: Tenant, events: list[dict]) -> None:
    resp = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text


async def _query(client: httpx.AsyncClient, tenant: Tenant, **params: object) -> list[dict]:
    resp = await client.get("/v1/events", params=params, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


@pytest.fixture
async def mixed(client: httpx.AsyncClient, tenant: Tenant) -> Tenant:
    now = datetime.now(UTC)
    events = [
        make_event(
            occurred_at=(now - timedelta(hours=3)).isoformat(),
            principal={"id": "dr.alice", "type": "user"},
            target={"resource_type": "Patient", "resource_id": "p1", "subject_id": "pat-1"},
        ),
        make_event(
            occurred_at=(now - timedelta(hours=2)).isoformat(),
            action="fhir.observation.read",
            principal={"id": "dr.bob", "type": "user"},
            target={"resource_type": "Observation", "resource_id": "o1", "subject_id": "pat-2"},
        ),
        make_event(
            occurred_at=(now - timedelta(hours=1)).isoformat(),
            action="auth.login",
            category="authentication",
            fhir_action="E",
            outcome="failure",
            data_classification="INTERNAL",
            principal={"id": "dr.bob", "type": "user"},
            target={"resource_type": "Device", "resource_id": "d1"},
        ),
    ]
    await _ingest(client, tenant, events)
    return tenant


async def test_filters(client: httpx.AsyncClient, mixed: Tenant) -> None:
    now = datetime.now(UTC)
    assert len(await _query(client, mixed)) == 3
    assert [e["seq"] for e in await _query(client, mixed, principal_id="dr.bob")] == [2, 1]
    assert [e["seq"] for e in await _query(client, mixed, subject_id="pat-1")] == [0]
    assert [e["seq"] for e in await _query(client, mixed, action_prefix="fhir.")] == [1, 0]
    assert [e["seq"] for e in await _query(client, mixed, action_prefix="fhir.obs")] == [1]
    assert [e["seq"] for e in await _query(client, mixed, outcome="failure")] == [2]
    assert [e["seq"] for e in await _query(client, mixed, category="authentication")] == [2]
    assert [e["seq"] for e in await _query(client, mixed, data_classification="PHI")] == [1, 0]
    window = {
        "start": (now - timedelta(hours=2, minutes=30)).isoformat(),
        "end": (now - timedelta(minutes=90)).isoformat(),
    }
    assert [e["seq"] for e in await _query(client, mixed, **window)] == [1]
    assert [e["seq"] for e in await _query(client, mixed, order="asc")] == [0, 1, 2]


async def test_action_prefix_is_literal(client: httpx.AsyncClient, mixed: Tenant) -> None:
    # LIKE wildcards in the prefix must not match anything they would as a pattern.
    assert await _query(client, mixed, action_prefix="fhir%") == []
    assert await _query(client, mixed, action_prefix="_hir") == []


async def test_bad_parameters_are_422_problems(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for params, name in [
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": 0}, "limit"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-01-01T00:00:00"}, "start"),
        ({"cursor": "garbage"}, "cursor"),
        ({"order": "sideways"}, "order"),
    ]:
        resp = await client.get("/v1/events", params=params, headers=tenant.headers)
        assert resp.status_code == 422, params
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["errors"][0]["parameter"] == name


async def test_pages_follow_the_cursor_and_are_stable_under_inserts(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _ingest(client, tenant, [make_event() for _ in range(25)])
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get("/v1/events", params=params, headers=tenant.headers)
        body = resp.json()
        seen += [e["seq"] for e in body["items"]]
        pages += 1
        if pages == 1:
            # New events arrive while the reader walks the pages.
            await _ingest(client, tenant, [make_event() for _ in range(7)])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(24, -1, -1))
    assert pages == 3


async def test_cursor_is_bound_to_its_filters(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _ingest(client, tenant, [make_event() for _ in range(3)])
    resp = await client.get("/v1/events", params={"limit": 1}, headers=tenant.headers)
    cursor = resp.json()["next_cursor"]
    other = await client.get(
        "/v1/events",
        params={"limit": 1, "cursor": cursor, "outcome": "failure"},
        headers=tenant.headers,
    )
    assert other.status_code == 422
    asc = await client.get(
        "/v1/events", params={"limit": 1, "cursor": cursor, "order": "asc"}, headers=tenant.headers
    )
    assert asc.status_code == 422


async def test_queries_never_cross_tenants(client: httpx.AsyncClient, app: object) -> None:
    from tests.conftest import new_tenant

    a, b = await new_tenant(app), await new_tenant(app)
    await _ingest(client, a, [make_event(principal={"id": "shared", "type": "user"})])
    assert await _query(client, b, principal_id="shared") == []
    export = await client.get("/v1/events/export", headers=b.headers)
    assert export.text == ""


async def test_export_streams_ndjson_in_seq_order(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    events = [make_event() for _ in range(1200)]
    for i in range(0, 1200, 600):
        await _ingest(client, tenant, events[i : i + 600])
    async with client.stream("GET", "/v1/events/export", headers=tenant.headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in resp.aiter_lines() if line]
    assert [e["seq"] for e in lines] == list(range(1200))
    assert [e["event_id"] for e in lines] == [e["event_id"] for e in events]
    filtered = await client.get(
        "/v1/events/export", params={"outcome": "failure"}, headers=tenant.headers
    )
    assert filtered.text == ""


async def test_exported_event_reproduces_its_hash(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    from reference_impl.integrity import canonicalize, chain_hash

    await _ingest(client, tenant, [make_event(), make_event()])
    resp = await client.get("/v1/events/export", headers=tenant.headers)
    prev = bytes(32)
    for line in resp.text.splitlines():
        event = json.loads(line)
        chain = {k: event.pop(k) for k in ("seq", "prev_hash", "hash", "key_id", "signature")}
        assert bytes.fromhex(chain["prev_hash"]) == prev
        digest = chain_hash(prev, chain["seq"], canonicalize(event))
        assert digest.hex() == chain["hash"]
        prev = digest


async def test_concurrent_readers_and_writers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async def write() -> None:
        for _ in range(5):
            await _ingest(client, tenant, [make_event() for _ in range(20)])

    async def read() -> list[int]:
        sizes = []
        for _ in range(10):
            items = await _query(client, tenant, limit=1000, order="asc")
            seqs = [e["seq"] for e in items]
            # A reader always sees a gapless prefix of the chain.
            assert seqs == list(range(len(seqs)))
            sizes.append(len(seqs))
        return sizes

    _, sizes = await asyncio.gather(write(), read())
    assert sizes == sorted(sizes)
