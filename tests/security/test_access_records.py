"""Reading, exporting or verifying audit data is itself recorded, in the reader's tenant."""

from __future__ import annotations

import pytest

from reference_impl.core.settings import Settings
from tests.conftest import new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration


async def test_reads_exports_and_verifications_are_audit_events(settings: Settings) -> None:
    async with app_with(settings, record_access=True) as (app, client):
        tenant = await new_tenant(app, "acc")
        event = make_event()
        await client.post("/v1/events", json=event, headers=tenant.headers)
        prefix = tenant.key.split("_")[1]
        headers = {**tenant.headers, "X-Purpose-Of-Use": "HCOMPL", "X-Correlation-ID": "inv-7"}
        await client.get("/v1/events?outcome=success", headers=headers)
        await client.get(f"/v1/events/{event['event_id']}", headers=headers)
        await client.get("/v1/events/export", headers=headers)
        await client.get("/v1/integrity/verify", headers=headers)
        export = await client.get("/v1/events/export?category=compliance", headers=tenant.headers)
    records = [__import__("json").loads(line) for line in export.text.splitlines()]
    actions = [r["action"] for r in records]
    assert actions[:4] == [
        "audit.events.query",
        "audit.events.read",
        "audit.events.export",
        "audit.integrity.verify",
    ]
    query = records[0]
    assert query["category"] == "compliance"
    assert query["principal"] == {
        "id": f"key:{prefix}",
        "type": "service",
        "roles": ["admin", "auditor", "ingest", "reader"],
    }
    assert query["purpose_of_use"] == "HCOMPL"
    assert query["correlation_id"] == "inv-7"
    assert query["details"]["filters"] == {"outcome": "success"}
    assert records[1]["target"] == {"resource_type": "AuditEvent", "resource_id": event["event_id"]}
    assert records[3]["fhir_action"] == "E"
    assert all(r["tenant"] == tenant.name for r in records)


async def test_key_administration_is_recorded(settings: Settings) -> None:
    async with app_with(settings, record_access=True) as (app, client):
        admin = await new_tenant(app, "acc", roles=("admin", "auditor"))
        made = await client.post(
            "/v1/keys", json={"name": "pump", "roles": ["ingest"]}, headers=admin.headers
        )
        await client.delete(f"/v1/keys/{made.json()['prefix']}", headers=admin.headers)
        export = await client.get(
            "/v1/events/export?category=administration", headers=admin.headers
        )
    actions = [__import__("json").loads(x)["action"] for x in export.text.splitlines()]
    assert actions == ["admin.key.create", "admin.key.revoke"]
