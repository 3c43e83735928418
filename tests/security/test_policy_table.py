"""The policy table covers every route, and the authorization matrix follows from it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.security.policy import POLICY, PUBLIC, Role
from tests.conftest import Tenant, new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration


def _routes(app: Any) -> set[tuple[str, str]]:
    doc = app.openapi()
    found = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    return found | {
        ("GET", p) for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    }


async def test_every_route_is_in_the_policy_table_and_no_entry_is_stale(app: object) -> None:
    routes = _routes(app)
    missing = sorted(routes - set(POLICY))
    stale = sorted(set(POLICY) - routes)
    assert not missing, f"routes without a policy: {missing}"
    assert not stale, f"policy entries without a route: {stale}"


async def test_no_dependency_is_declared_where_a_direct_route_would_skip_it(app: object) -> None:
    """`DirectRoute`s refuse their own dependencies; the app's would run for other routes
    only, so the service declares none (the ingest endpoints authorize themselves)."""
    from reference_impl.core.http import DirectRoute
    from reference_impl.events.endpoints import ingest_router

    assert not app.router.dependencies  # type: ignore[attr-defined]
    direct = {route.path for route in ingest_router.routes if isinstance(route, DirectRoute)}
    assert direct == {"/v1/events", "/v1/events:batch"}


async def test_a_route_missing_from_the_table_is_refused(settings: Settings) -> None:
    from fastapi import APIRouter, Depends

    from reference_impl.security.dependencies import authorize

    async with app_with(settings) as (app, client):
        extra = APIRouter(dependencies=[Depends(authorize)])

        @extra.get("/v1/unlisted")
        async def unlisted() -> dict[str, str]:
            return {"ok": "yes"}

        app.include_router(extra)
        tenant = await new_tenant(app)
        resp = await client.get("/v1/unlisted", headers=tenant.headers)
        assert resp.status_code == 403
        assert resp.json()["detail"] == "this route is not in the access policy"


ROLES: list[Role | None] = [None, *Role]


def _request(method: str, path: str, seeded: dict[str, str]) -> dict[str, Any]:
    """A well-formed request for each route (what varies is only who sends it)."""
    url = path
    for name, value in seeded.items():
        url = url.replace("{" + name + "}", value)
    kwargs: dict[str, Any] = {"method": method, "url": url}
    if path == "/v1/events":
        kwargs["json"] = make_event() if method == "POST" else None
    elif path == "/v1/events:batch":
        kwargs["json"] = {"events": [make_event()]}
    elif path in ("/v1/keys", "/v1/admin/tenants/{tenant}/keys"):
        kwargs["json"] = {"name": "matrix", "roles": ["reader"]}
    elif path == "/v1/log/proof/inclusion":
        kwargs["params"] = {"event_id": seeded["event_id"]}
    elif path == "/v1/log/proof/consistency":
        kwargs["params"] = {"from": "1", "to": "1"}
    return {k: v for k, v in kwargs.items() if v is not None}


@pytest.fixture(scope="module")
def matrix_cases() -> list[tuple[str, str, Role | None]]:
    return [
        (method, path, role)
        for (method, path), rule in sorted(POLICY.items())
        if rule is not PUBLIC and rule.roles is not None
        for role in ROLES
    ]


async def test_authorization_matrix(
    app: object, client: httpx.AsyncClient, matrix_cases: list[tuple[str, str, Role | None]]
) -> None:
    """Every protected route x every role (and no credentials): 401, 403, or let through."""
    owner = await new_tenant(app, "own")
    event = make_event()
    await client.post("/v1/events", json=event, headers=owner.headers)
    callers: dict[Role | None, Tenant | None] = {None: None}
    for role in Role:
        callers[role] = await new_tenant(app, "m", roles=(role.value,))
        # each caller works in the owner's tenant: give its key to the owner tenant
    failures = []
    for method, path, role in matrix_cases:
        rule = POLICY[(method, path)]
        caller = callers[role]
        seeded = {
            "event_id": event["event_id"],
            "entry_id": "1-0",
            "prefix": "000000000000",
            "tenant": owner.name,
        }
        request = _request(method, path, seeded)
        headers = {} if caller is None else caller.headers
        resp = await client.request(**request, headers=headers)
        if role is None:
            expected_ok = resp.status_code == 401
        elif role not in (rule.roles or ()):
            expected_ok = resp.status_code == 403
        else:
            expected_ok = resp.status_code not in (401, 403)
        if not expected_ok:
            failures.append((method, path, role, resp.status_code, resp.text[:200]))
    assert not failures, failures


async def test_another_tenants_data_is_invisible_to_every_role(
    app: object, client: httpx.AsyncClient
) -> None:
    owner = await new_tenant(app, "own")
    event = make_event(principal={"id": "only.owner", "type": "user"})
    await client.post("/v1/events", json=event, headers=owner.headers)
    outsider = await new_tenant(app, "out")
    for url in (
        f"/v1/events/{event['event_id']}",
        f"/v1/log/proof/inclusion?event_id={event['event_id']}",
    ):
        assert (await client.get(url, headers=outsider.headers)).status_code == 404, url
    listed = await client.get("/v1/events?principal_id=only.owner", headers=outsider.headers)
    assert listed.json()["items"] == []
    export = await client.get("/v1/events/export", headers=outsider.headers)
    assert event["event_id"] not in export.text
    keys = await client.get("/v1/keys", headers=outsider.headers)
    assert owner.key.split("_")[1] not in keys.text
    revoke = await client.delete(f"/v1/keys/{owner.key.split('_')[1]}", headers=outsider.headers)
    assert revoke.status_code == 404
    assert (await client.get("/v1/events", headers=owner.headers)).json()["items"]


async def test_platform_admin_cross_tenant_operations_are_explicit(
    app: object, client: httpx.AsyncClient
) -> None:
    target = await new_tenant(app, "tgt")
    await client.post("/v1/events", json=make_event(), headers=target.headers)
    platform = await new_tenant(app, "plat", roles=("platform_admin",))
    tenants = (await client.get("/v1/admin/tenants", headers=platform.headers)).json()
    assert {"tenant": target.name, "events": 1, "compromised": False} in tenants
    verdict = await client.post(f"/v1/admin/tenants/{target.name}/verify", headers=platform.headers)
    assert verdict.json()["valid"] is True
    made = await client.post(
        f"/v1/admin/tenants/{target.name}/keys",
        json={"name": "bootstrap", "roles": ["reader"]},
        headers=platform.headers,
    )
    assert made.status_code == 201
    reader = {"Authorization": f"Bearer {made.json()['key']}"}
    assert len((await client.get("/v1/events", headers=reader)).json()["items"]) == 1
    # A platform admin is not a reader of every tenant: it names the tenant each time.
    assert (await client.get("/v1/events", headers=platform.headers)).status_code == 403
    no_escalation = await client.post(
        f"/v1/admin/tenants/{target.name}/keys",
        json={"name": "x", "roles": ["platform_admin"]},
        headers=platform.headers,
    )
    assert no_escalation.status_code == 403
    bad_name = await client.post("/v1/admin/tenants/bad%20name/verify", headers=platform.headers)
    assert bad_name.status_code == 422


async def test_admin_manages_keys_of_its_tenant(app: object, client: httpx.AsyncClient) -> None:
    admin = await new_tenant(app, "adm", roles=("admin",))
    made = await client.post(
        "/v1/keys",
        json={"name": "ehr", "roles": ["ingest"], "expires_days": 30},
        headers=admin.headers,
    )
    assert made.status_code == 201
    body = made.json()
    assert body["roles"] == ["ingest"] and body["key"].startswith("ak_")
    ingest = {"X-API-Key": body["key"]}
    assert (await client.post("/v1/events", json=make_event(), headers=ingest)).status_code == 201
    listed = (await client.get("/v1/keys", headers=admin.headers)).json()
    mine = next(k for k in listed if k["prefix"] == body["prefix"])
    assert "key" not in mine and mine["expires_at"] is not None
    gone = await client.delete(f"/v1/keys/{body['prefix']}", headers=admin.headers)
    assert gone.status_code == 204
    assert (await client.post("/v1/events", json=make_event(), headers=ingest)).status_code == 401
    assert (
        await client.post("/v1/keys", json={"name": "x", "roles": []}, headers=admin.headers)
    ).status_code == 422
    assert (
        await client.delete(f"/v1/keys/{uuid.uuid4().hex[:12]}", headers=admin.headers)
    ).status_code == 404
