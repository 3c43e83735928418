"""Queued ingest (`?mode=async`), the worker, and the dead-letter queue, on real servers."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from reference_impl.core.settings import Settings
from reference_impl.pipeline.runner import worker_runtime
from tests.conftest import Tenant, new_tenant
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for
from tests.support.workers import drain, running_worker

pytestmark = pytest.mark.integration


async def _stored_ids(client: httpx.AsyncClient, tenant: Tenant) -> list[str]:
    resp = await client.get("/v1/events/export", headers=tenant.headers)
    return [json.loads(line)["event_id"] for line in resp.text.splitlines()]


async def test_queued_event_is_202_then_committed_by_the_worker(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    event = make_event()
    resp = await client.post("/v1/events?mode=async", json=event, headers=tenant.headers)
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "queued" and body["event_id"] == event["event_id"]
    assert await _stored_ids(client, tenant) == []
    async with running_worker(settings, "w-basic") as worker:
        await drain(worker)
    stored = await client.get(f"/v1/events/{event['event_id']}", headers=tenant.headers)
    assert stored.status_code == 200
    assert stored.json()["seq"] == 0


async def test_queued_batch_and_duplicates_are_stored_once(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    events = [make_event() for _ in range(20)]
    first = await client.post(
        "/v1/events:batch?mode=async", json={"events": events}, headers=tenant.headers
    )
    assert first.status_code == 202
    assert first.json()["queued"] == 20
    # The client retries half of them (same ids, same content) and sends one synchronously.
    await client.post(
        "/v1/events:batch?mode=async", json={"events": events[:10]}, headers=tenant.headers
    )
    await client.post("/v1/events", json=events[3], headers=tenant.headers)
    async with running_worker(settings, "w-dups") as worker:
        await drain(worker)
    stored = await _stored_ids(client, tenant)
    assert sorted(stored) == sorted(e["event_id"] for e in events)
    verdict = (await client.get("/v1/integrity/verify", headers=tenant.headers)).json()
    assert verdict["valid"] and verdict["checked"] == 20


async def test_several_workers_keep_every_chain_gapless(
    client: httpx.AsyncClient, app: object, settings: Settings
) -> None:
    tenants = [await new_tenant(app) for _ in range(3)]
    sent: dict[str, list[str]] = {t.name: [] for t in tenants}

    async def produce(t: Tenant) -> None:
        for _ in range(10):
            batch = [make_event() for _ in range(10)]
            r = await client.post(
                "/v1/events:batch?mode=async", json={"events": batch}, headers=t.headers
            )
            assert r.status_code == 202
            sent[t.name] += [e["event_id"] for e in batch]

    async with (
        running_worker(settings, "w-a") as a,
        running_worker(settings, "w-b"),
        running_worker(settings, "w-c"),
    ):
        await asyncio.gather(*(produce(t) for t in tenants))
        await drain(a)
    for t in tenants:
        assert sorted(await _stored_ids(client, t)) == sorted(sent[t.name])
        verdict = (await client.get("/v1/integrity/verify", headers=t.headers)).json()
        assert verdict["valid"] and verdict["checked"] == 100


async def test_entries_of_a_crashed_worker_are_reclaimed(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    events = [make_event() for _ in range(5)]
    await client.post(
        "/v1/events:batch?mode=async", json={"events": events}, headers=tenant.headers
    )
    async with worker_runtime(settings, "w-crashed") as crashed:
        await crashed.queue.ensure_groups()
        taken = await crashed.queue.read("w-crashed", 100, 100)
        assert {e.event.event_id for e in taken if e.event} >= {
            uuid.UUID(e["event_id"]) for e in events
        }
        # ... and the process dies here, before committing or acknowledging.
    quick = settings.model_copy(update={"queue_claim_idle_s": 0.0})
    async with running_worker(quick, "w-rescuer") as rescuer:
        await drain(rescuer)
    assert sorted(await _stored_ids(client, tenant)) == sorted(e["event_id"] for e in events)


async def test_poison_entry_goes_to_the_dlq_and_is_acknowledged(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    async with worker_runtime(settings, "w-poison") as w:
        await w.queue.ensure_groups()
        await w.queue.client.xadd(
            w.queue.stream_for(tenant.name),
            {"v": "1", "tenant": tenant.name, "event": b"{not json"},
        )
        async with running_worker(settings, "w-poison-run") as runner:
            await drain(runner)
    listed = (await client.get("/v1/dlq", headers=tenant.headers)).json()["items"]
    assert len(listed) == 1
    assert listed[0]["reason"] == "poison"
    assert listed[0]["event"] == "{not json"
    assert listed[0]["attempts"] == 1


async def test_conflicting_queued_event_is_dead_lettered(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    event = make_event()
    await client.post("/v1/events", json=event, headers=tenant.headers)
    other = {**event, "outcome": "failure"}
    assert (
        await client.post("/v1/events?mode=async", json=other, headers=tenant.headers)
    ).status_code == 202
    async with running_worker(settings, "w-conflict") as worker:
        await drain(worker)
    [letter] = (await client.get("/v1/dlq", headers=tenant.headers)).json()["items"]
    assert (letter["reason"], letter["error_type"]) == ("conflict", "conflict")
    assert letter["event_id"] == event["event_id"]
    replayed = await client.post(f"/v1/dlq/{letter['id']}:replay", headers=tenant.headers)
    assert replayed.status_code == 409
    assert len((await client.get("/v1/dlq", headers=tenant.headers)).json()["items"]) == 1
    purged = await client.delete(f"/v1/dlq/{letter['id']}", headers=tenant.headers)
    assert purged.status_code == 204
    assert (await client.get("/v1/dlq", headers=tenant.headers)).json()["items"] == []


async def test_entry_failing_every_attempt_is_dead_lettered_after_the_budget(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    broken = make_event()
    del broken["principal"]  # passes decoding, fails while building the chain row
    budget = settings.model_copy(update={"worker_max_attempts": 3, "queue_claim_idle_s": 0.0})
    async with worker_runtime(budget, "w-budget") as w:
        await w.queue.ensure_groups()
        await w.queue.client.xadd(
            w.queue.stream_for(tenant.name),
            {"v": "1", "tenant": tenant.name, "event": json.dumps(broken)},
        )
        reports = []
        for _ in range(3):
            entries = await w.queue.read_own_pending("w-budget", 10) or await w.queue.read(
                "w-budget", 10, 100
            )
            reports.append(await w.process(entries))
    assert [(r.deferred, r.dead_lettered) for r in reports] == [(1, 0), (1, 0), (0, 1)]
    [letter] = (await client.get("/v1/dlq", headers=tenant.headers)).json()["items"]
    assert letter["reason"] == "attempts"
    assert letter["attempts"] == 3
    assert letter["first_failure_at"] < letter["last_failure_at"]


async def test_dlq_replay_commits_and_removes_the_entry(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    event = make_event()
    async with worker_runtime(settings, "w-replay") as w:
        letter_id = await w.dlq.add(
            tenant.name,
            json.dumps({**event, "occurred_at": "2026-11-23T10:00:00.000000Z"}).encode(),
            event_id=event["event_id"],
            reason="attempts",
            error_type="database-unavailable",
            error_detail="the event store was unavailable",
            attempts=5,
        )
    resp = await client.post(f"/v1/dlq/{letter_id}:replay", headers=tenant.headers)
    assert resp.status_code == 201
    assert resp.json()["event_id"] == event["event_id"]
    assert (await client.get("/v1/dlq", headers=tenant.headers)).json()["items"] == []
    assert await _stored_ids(client, tenant) == [event["event_id"]]


async def test_dlq_routes_validate_and_scope_to_the_tenant(
    client: httpx.AsyncClient, app: object, settings: Settings
) -> None:
    a, b = await new_tenant(app), await new_tenant(app)
    async with worker_runtime(settings, "w-scope") as w:
        letter_id = await w.dlq.add(
            a.name,
            b"{}",
            event_id=None,
            reason="poison",
            error_type="x",
            error_detail="",
            attempts=1,
        )
    assert (await client.post(f"/v1/dlq/{letter_id}:replay", headers=b.headers)).status_code == 404
    assert (await client.delete(f"/v1/dlq/{letter_id}", headers=b.headers)).status_code == 404
    bad = await client.delete("/v1/dlq/not-an-id", headers=a.headers)
    assert bad.status_code == 422
    unreadable = await client.post(f"/v1/dlq/{letter_id}:replay", headers=a.headers)
    assert unreadable.status_code == 422
    assert (await client.get("/v1/dlq")).status_code == 401


async def test_dlq_commands(settings: Settings, app: object, client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(app)
    event = make_event()
    async with worker_runtime(settings, "w-cli") as w:
        for payload in (json.dumps({**event, "occurred_at": "2026-11-23T10:00:00.000000Z"}), "{"):
            await w.dlq.add(
                tenant.name, payload.encode(), event_id=None, reason="attempts",
                error_type="database-unavailable", error_detail="", attempts=5,
            )  # fmt: skip
    env = env_for(settings)
    listed = auditkit("dlq", "list", "--tenant", tenant.name, env=env)
    assert listed.returncode == 0 and "2 dead-lettered event(s)" in listed.stdout
    replayed = auditkit("dlq", "replay", "--tenant", tenant.name, "--all", env=env)
    assert replayed.returncode == 1  # one replays, the unreadable one cannot
    assert "replayed 1 of 2" in replayed.stdout
    assert await _stored_ids(client, tenant) == [event["event_id"]]
    assert auditkit("dlq", "replay", env=env).returncode == 2
    purged = auditkit("dlq", "purge", "--tenant", tenant.name, "--all", "--yes", env=env)
    assert "purged 1" in purged.stdout
    assert "0 dead-lettered" in auditkit("dlq", "list", "--tenant", tenant.name, env=env).stdout


async def test_queue_entry_carries_sanitized_content(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    event = make_event(outcome_description="<b>x</b>")
    await client.post("/v1/events?mode=async", json=event, headers=tenant.headers)
    redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    try:
        entries = await redis.xrange("{auditkit:ingest:0}")
        mine = [f for _, f in entries if f[b"tenant"].decode() == tenant.name]
        assert json.loads(mine[0][b"event"])["outcome_description"] == "&lt;b&gt;x&lt;/b&gt;"
    finally:
        await redis.aclose()
    async with running_worker(settings, "w-clean") as worker:
        await drain(worker)
