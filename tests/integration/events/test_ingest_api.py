"""POST /v1/events and /v1/events:batch against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from reference_impl.core.settings import Settings
from tests.conftest import Tenant, new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def _count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    resp = await client.get("/v1/events", params={"limit": 1000}, headers=tenant.headers)
    assert resp.status_code == 200
    return len(resp.json()["items"])


async def test_event_is_committed_and_receipted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    event = make_event()
    resp = await client.post("/v1/events", json=event, headers=tenant.headers)
    assert resp.status_code == 201
    receipt = resp.json()
    assert set(receipt) == {"event_id", "seq", "hash", "recorded_at", "key_id"}
    assert receipt["event_id"] == event["event_id"]
    assert receipt["seq"] == 0
    assert len(bytes.fromhex(receipt["hash"])) == 32
    assert receipt["key_id"] == "test-2026"
    assert resp.headers["location"] == f"/v1/events/{event['event_id']}"
    stored = await client.get(f"/v1/events/{event['event_id']}", headers=tenant.headers)
    assert stored.status_code == 200
    assert stored.json()["hash"] == receipt["hash"]
    assert stored.json()["tenant"] == tenant.name


async def test_seq_is_gapless_per_tenant(client: httpx.AsyncClient, app: object) -> None:
    from tests.conftest import new_tenant

    a, b = await new_tenant(app), await new_tenant(app)
    seqs: dict[str, list[int]] = {a.name: [], b.name: []}
    for t in (a, b, a, a, b):
        resp = await client.post("/v1/events", json=make_event(), headers=t.headers)
        seqs[t.name].append(resp.json()["seq"])
    assert seqs[a.name] == [0, 1, 2]
    assert seqs[b.name] == [0, 1]


async def test_retry_with_same_content_returns_original_receipt(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    event = make_event()
    first = await client.post("/v1/events", json=event, headers=tenant.headers)
    again = await client.post("/v1/events", json=event, headers=tenant.headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await _count(client, tenant) == 1


async def test_same_id_other_content_is_a_conflict(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    event = make_event()
    await client.post("/v1/events", json=event, headers=tenant.headers)
    changed = {**event, "outcome": "failure"}
    resp = await client.post("/v1/events", json=changed, headers=tenant.headers)
    assert resp.status_code == 409
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == "urn:auditkit:problem:conflict"
    assert body["errors"] == [
        {
            "detail": "this event_id was already recorded with different content",
            "pointer": "/event_id",
        }
    ]
    assert await _count(client, tenant) == 1


async def test_same_event_id_in_two_tenants_is_two_events(
    client: httpx.AsyncClient, app: object
) -> None:
    from tests.conftest import new_tenant

    a, b = await new_tenant(app), await new_tenant(app)
    event = make_event()
    assert (await client.post("/v1/events", json=event, headers=a.headers)).status_code == 201
    assert (await client.post("/v1/events", json=event, headers=b.headers)).status_code == 201


async def test_concurrent_retries_store_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    event = make_event()
    responses = await asyncio.gather(
        *(client.post("/v1/events", json=event, headers=tenant.headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["hash"] for r in responses}) == 1
    assert await _count(client, tenant) == 1


async def test_concurrent_requests_share_transactions_and_stay_gapless(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/events", json=make_event(), headers=tenant.headers) for _ in range(200))
    )
    assert all(r.status_code == 201 for r in responses)
    assert sorted(r.json()["seq"] for r in responses) == list(range(200))
    # One transaction stamps one recorded_at: far fewer commits than requests.
    commits = {r.json()["recorded_at"] for r in responses}
    assert len(commits) < 50
    verdict = await client.get("/v1/integrity/verify", headers=tenant.headers)
    assert verdict.json()["valid"] is True
    assert verdict.json()["checked"] == 200


@pytest.mark.parametrize(("linger_ms", "shared"), [(0, False), (100, True)])
async def test_a_lingering_committer_lets_a_later_request_join_the_transaction(
    settings: Settings, linger_ms: float, shared: bool
) -> None:
    async with app_with(settings, group_commit_linger_ms=linger_ms) as (app, client):
        tenant = await new_tenant(app)
        # Seen once: the tenant's chain head exists before the two requests race.
        await client.post("/v1/events", json=make_event(), headers=tenant.headers)

        async def later() -> httpx.Response:
            await asyncio.sleep(0.02)  # well within the linger, well after the first
            return await client.post("/v1/events", json=make_event(), headers=tenant.headers)

        first, second = await asyncio.gather(
            client.post("/v1/events", json=make_event(), headers=tenant.headers), later()
        )
    assert (first.status_code, second.status_code) == (201, 201)
    # One transaction stamps one recorded_at.
    assert (first.json()["recorded_at"] == second.json()["recorded_at"]) is shared
    assert sorted([first.json()["seq"], second.json()["seq"]]) == [1, 2]


async def test_tenant_comes_from_credentials_not_body(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post(
        "/v1/events", json={**make_event(), "tenant": "someone-else"}, headers=tenant.headers
    )
    assert resp.status_code == 422
    assert {"detail": "Extra inputs are not permitted", "pointer": "/tenant"} in resp.json()[
        "errors"
    ]


async def test_batch_returns_receipts_in_order(client: httpx.AsyncClient, tenant: Tenant) -> None:
    events = [make_event() for _ in range(5)]
    resp = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert resp.status_code == 201
    body = resp.json()
    assert body["created"] == 5 and body["duplicates"] == 0
    assert [r["event_id"] for r in body["receipts"]] == [e["event_id"] for e in events]
    assert [r["seq"] for r in body["receipts"]] == [0, 1, 2, 3, 4]
    again = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 5
    assert again.json()["receipts"] == body["receipts"]


async def test_batch_with_one_invalid_event_stores_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    events = [make_event(), make_event(outcome="maybe"), make_event(), make_event(action="X")]
    resp = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert resp.status_code == 422
    pointers = [e["pointer"] for e in resp.json()["errors"]]
    assert pointers == ["/events/1/outcome", "/events/3/action"]
    assert await _count(client, tenant) == 0


async def test_batch_conflict_stores_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    stored = make_event()
    await client.post("/v1/events", json=stored, headers=tenant.headers)
    batch = [make_event(), {**stored, "outcome": "failure"}, make_event()]
    resp = await client.post("/v1/events:batch", json={"events": batch}, headers=tenant.headers)
    assert resp.status_code == 409
    assert resp.json()["errors"][0]["pointer"] == "/events/1/event_id"
    assert await _count(client, tenant) == 1


async def test_batch_limit(client: httpx.AsyncClient, tenant: Tenant) -> None:
    events = [make_event() for _ in range(1001)]
    resp = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"detail": "at most 1000 events", "pointer": "/events"}]
    empty = await client.post("/v1/events:batch", json={"events": []}, headers=tenant.headers)
    assert empty.status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/events", make_event()), ("/v1/events:batch", {"events": [make_event()]})],
)
async def test_unknown_mode_is_422_naming_the_parameter(
    client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, object]
) -> None:
    resp = await client.post(f"{path}?mode=later", json=body, headers=tenant.headers)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"] == [
        {"detail": "Input should be 'sync' or 'async'", "parameter": "mode"}
    ]
    assert await _count(client, tenant) == 0
    stored = await client.post(f"{path}?mode=sync", json=body, headers=tenant.headers)
    assert stored.status_code == 201


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "send an API key in 'Authorization: Bearer' or 'X-API-Key'"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, "use 'Authorization: Bearer <api key or token>'"),
        ({"Authorization": "Bearer nonsense"}, "the API key is malformed"),
        ({"X-API-Key": "ak_000000000000_" + "x" * 43}, "the API key is not valid"),
    ],
)
async def test_missing_or_bad_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str], detail: str
) -> None:
    resp = await client.post("/v1/events", json=make_event(), headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["detail"] == detail
    assert resp.json()["type"] == "urn:auditkit:problem:unauthorized"


async def test_revoked_key_is_refused(
    client: httpx.AsyncClient, app: object, tenant: Tenant
) -> None:
    prefix = tenant.key.split("_")[1]
    assert await app.state.api_keys.revoke(prefix)  # type: ignore[attr-defined]
    resp = await client.post("/v1/events", json=make_event(), headers=tenant.headers)
    assert resp.status_code == 401
    assert resp.json()["detail"] == "the API key was revoked"


async def test_non_json_body_is_415(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(
        "/v1/events",
        content=b"event_id=1",
        headers={**tenant.headers, "Content-Type": "text/plain"},
    )
    assert resp.status_code == 415
    assert await _count(client, tenant) == 0


async def test_oversized_event_is_413(client: httpx.AsyncClient, tenant: Tenant) -> None:
    event = make_event(details={"blob": "x" * 70_000})
    resp = await client.post("/v1/events", json=event, headers=tenant.headers)
    assert resp.status_code == 413
    assert resp.json()["type"] == "urn:auditkit:problem:payload-too-large"


async def test_invalid_json_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.post(
        "/v1/events",
        content=b'{"event_id": ',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["detail"] == "the body is not valid JSON"


async def test_problem_has_correlation_id_and_no_input_echo(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    secret_name = "Jane Q. Patient 1957-03-02"
    event = make_event(principal={"id": secret_name, "type": "user"})
    resp = await client.post(
        "/v1/events", json=event, headers={**tenant.headers, "X-Correlation-ID": "req-42"}
    )
    assert resp.status_code == 422
    assert resp.json()["correlation_id"] == "req-42"
    assert resp.headers["x-correlation-id"] == "req-42"
    assert "Jane" not in resp.text
    assert "Traceback" not in resp.text


async def test_unknown_event_is_404_and_other_tenants_events_are_invisible(
    client: httpx.AsyncClient, app: object
) -> None:
    from tests.conftest import new_tenant

    a, b = await new_tenant(app), await new_tenant(app)
    event = make_event()
    await client.post("/v1/events", json=event, headers=a.headers)
    resp = await client.get(f"/v1/events/{event['event_id']}", headers=b.headers)
    assert resp.status_code == 404
    assert resp.json()["type"] == "urn:auditkit:problem:not-found"
    missing = await client.get(f"/v1/events/{uuid.uuid4()}", headers=a.headers)
    assert missing.status_code == 404
