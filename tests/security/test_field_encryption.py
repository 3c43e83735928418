"""Field-level encryption: ciphertext at rest and under the hash, plaintext for readers,
rotation that touches no event, and idempotency that survives random nonces."""

from __future__ import annotations

import json

import asyncpg
import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.integrity import canonicalize, chain_hash
from tests.conftest import Tenant
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for
from tests.support.workers import drain, running_worker

pytestmark = pytest.mark.integration

IP = "192.0.2.77"


async def _stored_row(superuser: asyncpg.Connection, tenant: str) -> asyncpg.Record:
    return await superuser.fetchrow(
        "SELECT canonical, hash, prev_hash, seq FROM audit_events WHERE tenant_id = $1"
        " ORDER BY seq LIMIT 1",
        tenant,
    )


async def test_configured_field_is_ciphertext_at_rest_and_plaintext_to_readers(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    event = make_event(session={"session_id": "s-9", "ip_address": IP, "user_agent": "EHR"})
    assert (await client.post("/v1/events", json=event, headers=tenant.headers)).status_code == 201
    row = await _stored_row(superuser, tenant.name)
    stored = json.loads(row["canonical"])
    assert stored["session"]["ip_address"].startswith("enc:v1:dk-")
    assert IP.encode() not in bytes(row["canonical"])
    # The hash covers the ciphertext, so the chain verifies without any key.
    assert chain_hash(bytes(row["prev_hash"]), row["seq"], bytes(row["canonical"])) == bytes(
        row["hash"]
    )
    read = (await client.get(f"/v1/events/{event['event_id']}", headers=tenant.headers)).json()
    assert read["session"]["ip_address"] == IP
    listed = (await client.get("/v1/events", headers=tenant.headers)).json()["items"]
    assert listed[0]["session"]["ip_address"] == IP
    exported = json.loads((await client.get("/v1/events/export", headers=tenant.headers)).text)
    assert exported["session"]["ip_address"].startswith("enc:v1:")
    chain = {k: exported.pop(k) for k in ("seq", "prev_hash", "hash", "key_id", "signature")}
    assert chain_hash(bytes(32), 0, canonicalize(exported)).hex() == chain["hash"]
    plain = await client.get("/v1/events/export?decrypt=true", headers=tenant.headers)
    assert json.loads(plain.text)["session"]["ip_address"] == IP


async def test_retries_are_idempotent_although_every_encryption_differs(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    event = make_event(session={"ip_address": IP})
    first = await client.post("/v1/events", json=event, headers=tenant.headers)
    again = await client.post("/v1/events", json=event, headers=tenant.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    queued = await client.post("/v1/events?mode=async", json=event, headers=tenant.headers)
    assert queued.status_code == 202
    async with running_worker(settings, "w-enc") as worker:
        await drain(worker)
    changed = {**event, "session": {"ip_address": "192.0.2.78"}}
    conflict = await client.post("/v1/events", json=changed, headers=tenant.headers)
    assert conflict.status_code == 409
    assert len((await client.get("/v1/events", headers=tenant.headers)).json()["items"]) == 1


async def test_ciphertext_moved_to_another_event_does_not_decrypt(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    a, b = make_event(session={"ip_address": IP}), make_event(session={"ip_address": "192.0.2.1"})
    for e in (a, b):
        await client.post("/v1/events", json=e, headers=tenant.headers)
    rows = await superuser.fetch(
        "SELECT canonical FROM audit_events WHERE tenant_id = $1 ORDER BY seq", tenant.name
    )
    stolen = json.loads(rows[0]["canonical"])["session"]["ip_address"]
    await superuser.execute("SET session_replication_role = replica")
    moved = json.loads(rows[1]["canonical"])
    moved["session"]["ip_address"] = stolen
    await superuser.execute(
        "UPDATE audit_events SET canonical = $2 WHERE tenant_id = $1 AND seq = 1",
        tenant.name,
        json.dumps(moved).encode(),
    )
    read = (await client.get(f"/v1/events/{b['event_id']}", headers=tenant.headers)).json()
    assert read["session"]["ip_address"] == stolen  # shown as stored, never as a's plaintext


async def test_rotation_rewraps_data_keys_and_touches_no_event() -> None:
    # On private servers: a rotation re-wraps every data key of the database, which must
    # not pull the key file from under the rest of the suite.
    from tests.conftest import new_tenant
    from tests.support.stack import private_stack

    async with private_stack() as stack:
        tenant = await new_tenant(stack.app)
        event = make_event(session={"ip_address": IP})
        await stack.client.post("/v1/events", json=event, headers=tenant.headers)
        superuser = await asyncpg.connect(stack.postgres.url("auditkit"))
        try:
            rows_sql = "SELECT canonical, hash FROM audit_events WHERE tenant_id = $1"
            before = await superuser.fetch(rows_sql, tenant.name)
            keks_sql = "SELECT id, kek_id FROM data_keys"
            keks_before = {r["id"]: r["kek_id"] for r in await superuser.fetch(keks_sql)}
            rotated = auditkit("keys", "rotate", env=env_for(stack.settings))
            assert rotated.returncode == 0, rotated.stderr
            assert "no event was changed" in rotated.stdout
            keks_after = {r["id"]: r["kek_id"] for r in await superuser.fetch(keks_sql)}
            after = await superuser.fetch(rows_sql, tenant.name)
        finally:
            await superuser.close()
        assert keks_after.keys() == keks_before.keys()
        assert len(set(keks_after.values())) == 1
        assert set(keks_after.values()).isdisjoint(keks_before.values())
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        # The running process reads the key file again when it meets the new key id.
        stack.app.state.encryptor._by_id.clear()
        stack.app.state.encryptor._active.clear()
        read = await stack.client.get(f"/v1/events/{event['event_id']}", headers=tenant.headers)
        assert read.json()["session"]["ip_address"] == IP
