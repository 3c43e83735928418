"""The OpenAPI document describes every route and the event schema."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


async def test_openapi_lists_routes_and_schemas(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in (
        "/v1/events",
        "/v1/events:batch",
        "/v1/events/export",
        "/v1/events/{event_id}",
        "/v1/integrity/verify",
        "/health/live",
        "/health/ready",
    ):
        assert path in paths
    schemas = doc["components"]["schemas"]
    assert {"AuditEventIn", "BatchIn", "Principal", "Target", "Receipt"} <= set(schemas)
    body = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AuditEventIn"}
    event = schemas["AuditEventIn"]
    assert event["additionalProperties"] is False
    assert "event_id" in event["required"]
    assert set(paths["/v1/events"]["post"]["responses"]) >= {"201", "200", "409", "422", "503"}
    for path in ("/v1/events", "/v1/events:batch"):
        [mode] = paths[path]["post"]["parameters"]
        assert (mode["name"], mode["in"], mode["required"]) == ("mode", "query", False)
        assert mode["schema"]["anyOf"][0]["enum"] == ["sync", "async"]
