"""A broken chain fails fast: critical alert, webhook, metric, compromised mark, warnings."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from reference_impl.api.app import create_app
from reference_impl.core.settings import Settings
from tests.conftest import Tenant, make_settings, new_tenant
from tests.support import tamper
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for

pytestmark = pytest.mark.integration


class _Webhook:
    """A real HTTP endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    hook = _Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


async def _seed(client: httpx.AsyncClient, tenant: Tenant, n: int = 5) -> None:
    events = [make_event() for _ in range(n)]
    resp = await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    assert resp.status_code == 201


async def test_tamper_found_on_demand_alerts_and_marks_the_tenant(
    settings: Settings, superuser: asyncpg.Connection, webhook: _Webhook
) -> None:
    app = create_app(
        make_settings(
            settings.database_url.get_secret_value(),  # type: ignore[union-attr]
            settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
            settings.state_dir,
            alert_webhook_url=webhook.url,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tenant = await new_tenant(app)
            await _seed(client, tenant)
            read = await client.get("/v1/events", headers=tenant.headers)
            assert "audit-integrity" not in read.headers
            await tamper.modify_canonical(superuser, tenant.name, 2)

            with capture_logs() as logs:
                verdict = (await client.get("/v1/integrity/verify", headers=tenant.headers)).json()
            assert (verdict["first_broken_seq"], verdict["kind"]) == (2, "modified")
            critical = [x for x in logs if x["log_level"] == "critical"]
            assert [x["event"] for x in critical] == ["integrity.tamper_detected"]
            assert critical[0]["tenant"] == tenant.name
            assert [w["event"] for w in webhook.received] == ["integrity.tamper_detected"]
            assert webhook.received[0]["first_broken_seq"] == 2

            # Reads keep working, with a warning; ingest keeps working.
            read = await client.get("/v1/events", headers=tenant.headers)
            assert read.status_code == 200
            assert read.headers["audit-integrity"] == "compromised; seq=2; kind=modified"
            one = await client.get(f"/v1/events/{read.json()['items'][0]['event_id']}",
                                   headers=tenant.headers)  # fmt: skip
            assert one.headers["audit-integrity"].startswith("compromised")
            assert (await client.post("/v1/events", json=make_event(), headers=tenant.headers)
                    ).status_code == 201  # fmt: skip

            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            integrity = ready.json()["integrity"]
            assert integrity["status"] == "compromised"
            assert {m["tenant"] for m in integrity["compromised"]} >= {tenant.name}
            metrics = (await client.get("/metrics")).text
            assert 'auditkit_tamper_detected_total{kind="modified"}' in metrics

            # A second finding of the same break does not page again.
            await client.get("/v1/integrity/verify", headers=tenant.headers)
            assert len(webhook.received) == 1

            env = env_for(settings)
            status = auditkit("integrity", "status", env=env)
            assert status.returncode == 1 and tenant.name in status.stdout
            refused = auditkit("integrity", "clear", "--tenant", tenant.name, env=env)
            assert refused.returncode == 1 and "still fails verification at seq 2" in refused.stderr


async def test_scheduled_verification_finds_tampering_without_a_request(
    settings: Settings, superuser: asyncpg.Connection, client: httpx.AsyncClient, app: object
) -> None:
    tenant = await new_tenant(app)
    await _seed(client, tenant)
    await tamper.delete(superuser, tenant.name, 1)
    scheduled = create_app(
        make_settings(
            settings.database_url.get_secret_value(),  # type: ignore[union-attr]
            settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
            settings.state_dir,
            verify_interval_s=0.2,
        )
    )
    async with scheduled.router.lifespan_context(scheduled):
        monitor = scheduled.state.monitor
        for _ in range(100):
            marks = {m["tenant"]: m for m in await monitor.compromised()}
            if tenant.name in marks:
                break
            await asyncio.sleep(0.1)
    assert marks[tenant.name]["seq"] == 1
    assert marks[tenant.name]["kind"] == "deleted"


async def test_clear_lifts_the_mark_once_the_chain_verifies(
    settings: Settings, superuser: asyncpg.Connection, client: httpx.AsyncClient, app: object
) -> None:
    tenant = await new_tenant(app)
    await _seed(client, tenant, 3)
    original = await superuser.fetchval(
        "SELECT canonical FROM audit_events WHERE tenant_id = $1 AND seq = 0", tenant.name
    )
    await tamper.modify_canonical(superuser, tenant.name, 0)
    assert not (await client.get("/v1/integrity/verify", headers=tenant.headers)).json()["valid"]
    # The investigation restores the row from a verified backup ...
    await superuser.execute("SET session_replication_role = replica")
    await superuser.execute(
        "UPDATE audit_events SET canonical = $2 WHERE tenant_id = $1 AND seq = 0",
        tenant.name,
        original,
    )
    cleared = auditkit("integrity", "clear", "--tenant", tenant.name, env=env_for(settings))
    assert cleared.returncode == 0, cleared.stderr
    read = await client.get("/v1/events", headers=tenant.headers)
    assert "audit-integrity" not in read.headers
