"""Security headers, body bounds, CORS, versioning and deprecation."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from reference_impl.core.settings import Settings
from tests.conftest import Tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_security_and_api_headers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    resp = await client.get("/v1/events", headers=tenant.headers)
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["api-version"] == "v1"
    assert resp.headers["cache-control"] == "no-store"
    problem = await client.get("/v1/events")
    assert problem.headers["api-version"] == "v1"
    assert "strict-transport-security" not in resp.headers


async def test_hsts_when_configured(settings: Settings) -> None:
    async with app_with(settings, hsts=True) as (_, client):
        resp = await client.get("/health/live")
    assert resp.headers["strict-transport-security"].startswith("max-age=")


async def test_unknown_api_version_is_a_404_problem(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/events")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == "API version v2 does not exist; this service speaks v1"


async def test_oversized_body_is_refused_on_any_route(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    huge = b"x" * (settings.max_batch_bytes + 1)
    for url in ("/v1/events/export", "/v1/keys", "/health/live"):
        resp = await client.request(
            "POST" if url == "/v1/keys" else "GET", url, content=huge, headers=tenant.headers
        )
        assert resp.status_code == 413, url
        assert resp.json()["type"] == "urn:auditkit:problem:payload-too-large"


async def test_cors_is_off_unless_origins_are_named(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    preflight = {
        "Origin": "https://ehr.example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    off = await client.options("/v1/events", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    async with app_with(settings, cors_origins=["https://ehr.example.org"]) as (_, c):
        on = await c.options("/v1/events", headers=preflight)
        assert on.headers["access-control-allow-origin"] == "https://ehr.example.org"
        other = await c.options("/v1/events", headers={**preflight, "Origin": "https://x.test"})
        assert "access-control-allow-origin" not in other.headers


async def test_routes_can_be_marked_deprecated(settings: Settings) -> None:
    from fastapi import APIRouter

    from reference_impl.core.http import deprecated

    router = APIRouter()
    since = datetime(2026, 6, 1, tzinfo=UTC)
    sunset = datetime(2027, 1, 1, tzinfo=UTC)

    @router.get("/v1/old", **deprecated(since=since, sunset=sunset, link="/docs/migration"))
    async def old() -> dict[str, str]:
        return {"still": "here"}

    async with app_with(settings) as (app, client):
        app.include_router(router)
        resp = await client.get("/v1/old")
        assert resp.headers["deprecation"] == f"@{int(since.timestamp())}"
        assert resp.headers["sunset"] == "Fri, 01 Jan 2027 00:00:00 GMT"
        assert resp.headers["link"] == '</docs/migration>; rel="deprecation"'
        app.openapi_schema = None
        assert app.openapi()["paths"]["/v1/old"]["get"]["deprecated"] is True


def test_secrets_are_compared_in_constant_time() -> None:
    """No `==` between a presented secret (or MAC) and a stored one, anywhere."""
    for path in [
        ROOT / "reference_impl/security/apikeys.py",
        ROOT / "reference_impl/integrity/signing.py",
    ]:
        tree = ast.parse(path.read_text())
        source = path.read_text()
        assert "compare_digest" in source, path
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                assert not names & {"secret", "stored", "signature", "mac"}, (path, node.lineno)


async def test_ingest_still_works_with_every_hardening_on(settings: Settings) -> None:
    async with app_with(settings, hsts=True, cors_origins=["https://ehr.example.org"]) as (app, c):
        from tests.conftest import new_tenant

        tenant = await new_tenant(app)
        assert (
            await c.post("/v1/events", json=make_event(), headers=tenant.headers)
        ).status_code == 201
