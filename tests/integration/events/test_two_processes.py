"""Two API processes on one database, hammering one tenant, leave one gapless, valid chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.events.verification import verify_tenant
from tests.conftest import new_tenant
from tests.support.events import make_event
from tests.support.processes import env_for, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS_PER_SERVER = 16
EVENTS_PER_CLIENT = 40


async def test_two_servers_one_tenant_one_chain(
    app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    env = env_for(settings)
    with (
        running_service(env, tmp_path / "a.log") as a,
        running_service(env, tmp_path / "b.log") as b,
    ):
        url_a, url_b = a.url, b.url
        acknowledged: list[dict] = []

        async def client_loop(base: str, n: int) -> None:
            async with httpx.AsyncClient(base_url=base, headers=tenant.headers, timeout=30) as c:
                for i in range(EVENTS_PER_CLIENT):
                    if i % 10 == 9:  # every tenth request is a small batch
                        events = [make_event() for _ in range(3)]
                        r = await c.post("/v1/events:batch", json={"events": events})
                        assert r.status_code == 201, r.text
                        acknowledged.extend(r.json()["receipts"])
                    else:
                        r = await c.post("/v1/events", json=make_event())
                        assert r.status_code == 201, r.text
                        acknowledged.append(r.json())

        await asyncio.gather(
            *(client_loop(base, n) for base in (url_a, url_b) for n in range(CLIENTS_PER_SERVER))
        )

    seqs = sorted(r["seq"] for r in acknowledged)
    assert seqs == list(range(len(acknowledged)))
    verdict = await verify_tenant(app.state.engine, app.state.keyring, tenant.name)  # type: ignore[attr-defined]
    assert verdict.result.valid, verdict.result.detail
    assert verdict.result.checked == len(acknowledged)
