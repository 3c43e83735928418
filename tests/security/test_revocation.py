"""A revoked key stops working on the next request, in every process."""

from __future__ import annotations

import asyncio

import pytest

from reference_impl.core.settings import Settings
from tests.conftest import new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def test_revocation_reaches_every_process_at_once(settings: Settings) -> None:
    long_cache = {"api_key_cache_seconds": 300}
    async with (
        app_with(settings, **long_cache) as (app_a, client_a),
        app_with(settings, **long_cache) as (_, client_b),
    ):
        admin = await new_tenant(app_a, "rev")
        made = await client_a.post(
            "/v1/keys", json={"name": "device", "roles": ["ingest"]}, headers=admin.headers
        )
        key = {"X-API-Key": made.json()["key"]}
        # Process B has checked (and cached, for five minutes) the key.
        assert (
            await client_b.post("/v1/events", json=make_event(), headers=key)
        ).status_code == 201
        revoked = await client_a.delete(f"/v1/keys/{made.json()['prefix']}", headers=admin.headers)
        assert revoked.status_code == 204
        for _ in range(50):  # the broadcast arrives within milliseconds
            resp = await client_b.post("/v1/events", json=make_event(), headers=key)
            if resp.status_code == 401:
                break
            await asyncio.sleep(0.02)
        assert resp.status_code == 401
        assert resp.json()["detail"] == "the API key was revoked"
