"""Witnesses: a directory and a real HTTP webhook, each running the pure witness logic.

The tamper test is the point of the verifiable log: someone with superuser access rewrites
an event that a witness has already seen under a checkpoint, and recomputes the Merkle
nodes so that the stored tree is self-consistent. The next checkpoint is refused by every
witness, the refusal is a CRITICAL alert, and the tenant's log is marked compromised.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from playbooks.tamper_response import rewrite_event
from reference_impl.api.app import create_app
from reference_impl.core.settings import Settings
from reference_impl.integrity.checkpoint import NoteSigner, NoteVerifier
from reference_impl.integrity.witness import HTTP_STATUS, Outcome, Witness
from tests.conftest import TEST_CHECKPOINT_KEYS, Tenant, make_settings, new_tenant
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for

pytestmark = pytest.mark.integration


def _log_keys() -> list[NoteVerifier]:
    import base64

    return [
        NoteSigner(name, base64.b64decode(seed)).verifier
        for name, seed in TEST_CHECKPOINT_KEYS.items()
    ]


class HttpWitness:
    """A real HTTP witness: tlog-witness `add-checkpoint` over the pure witness logic."""

    def __init__(self) -> None:
        self.witness = Witness(_log_keys())
        self.answers: list[Outcome] = []
        self.lock = threading.Lock()
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                # Checking the old size and storing the new checkpoint are one step.
                with outer.lock:
                    decision = outer.witness.add_checkpoint(body)
                outer.answers.append(decision.outcome)
                status = HTTP_STATUS[decision.outcome]
                text = (
                    f"{decision.latest_size}\n" if status == 409 else decision.reason + "\n"
                ).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/x.tlog.size" if status == 409 else "text/plain"
                )
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/add-checkpoint"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def size(self, origin: str) -> int:
        held = self.witness.latest(origin)
        return 0 if held is None else held.size


@pytest.fixture
def http_witness() -> Iterator[HttpWitness]:
    witness = HttpWitness()
    witness.thread.start()
    try:
        yield witness
    finally:
        witness.server.shutdown()
        witness.server.server_close()
        witness.thread.join(timeout=5)


def _settings_with_witnesses(
    settings: Settings, state: Path, witness_dir: Path, url: str, **extra: Any
) -> Settings:
    return make_settings(
        settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        state,
        witness_dir=witness_dir,
        witness_urls=[url],
        **extra,
    )


class Running:
    """An app with witnesses configured, and a client for it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, settings: Settings) -> None:
        self.app = app
        self.client = client
        self.settings = settings

    async def ingest(self, tenant: Tenant, n: int) -> None:
        events = [make_event() for _ in range(n)]
        resp = await self.client.post(
            "/v1/events:batch", json={"events": events}, headers=tenant.headers
        )
        assert resp.status_code == 201, resp.text

    async def checkpoint(self, tenant: Tenant) -> httpx.Response:
        return await self.client.post("/v1/log/checkpoint", headers=tenant.headers)

    def origin(self, tenant: Tenant) -> str:
        return f"{self.settings.log_origin}/{tenant.name}"


@pytest.fixture
async def running(
    settings: Settings, tmp_path: Path, http_witness: HttpWitness
) -> AsyncIterator[Running]:
    configured = _settings_with_witnesses(
        settings, tmp_path / "state", tmp_path / "witness", http_witness.url
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield Running(app, client, configured)


def _outcomes(resp: httpx.Response) -> dict[str, str]:
    return {w["witness"]: w["outcome"] for w in resp.json()["witnesses"]}


async def test_witnesses_accept_checkpoints_that_extend_the_last_one(
    running: Running, http_witness: HttpWitness, tmp_path: Path
) -> None:
    tenant = await new_tenant(running.app)
    for n, size in ((3, 3), (4, 7), (9, 16)):
        await running.ingest(tenant, n)
        resp = await running.checkpoint(tenant)
        assert resp.status_code == 201, resp.text
        assert _outcomes(resp) == {"directory": "accepted", http_witness.url: "accepted"}
        assert http_witness.size(running.origin(tenant)) == size
    # Nothing new: both witnesses already hold the latest checkpoint.
    resp = await running.checkpoint(tenant)
    assert _outcomes(resp) == {"directory": "up_to_date", http_witness.url: "up_to_date"}

    origin_dir = next((tmp_path / "witness").iterdir())
    assert sorted(p.name for p in (origin_dir / "accepted").iterdir()) == [
        "16.req",
        "3.req",
        "7.req",
    ]
    latest = (origin_dir / "latest.checkpoint").read_text()
    assert latest == resp.json()["checkpoint"]["note"]
    status = auditkit("log", "witnesses", "--tenant", tenant.name, env=env_for(running.settings))
    assert status.returncode == 0, status.stderr
    assert "accepted" in status.stdout


async def test_a_witness_that_lost_track_is_brought_up_to_date(
    running: Running, http_witness: HttpWitness, superuser: asyncpg.Connection
) -> None:
    tenant = await new_tenant(running.app)
    await running.ingest(tenant, 5)
    await running.checkpoint(tenant)
    # The log forgets what the webhook witness holds: it sends a proof from 0, the witness
    # answers 409 with its size, and the log retries with a proof from that size.
    await superuser.execute("DELETE FROM witness_states WHERE tenant_id = $1", tenant.name)
    await running.ingest(tenant, 2)
    resp = await running.checkpoint(tenant)
    assert _outcomes(resp)[http_witness.url] == "accepted"
    assert http_witness.answers[-2:] == [Outcome.CONFLICT, Outcome.ACCEPTED]
    assert http_witness.size(running.origin(tenant)) == 7


async def test_an_unreachable_witness_is_caught_up_later(
    running: Running, http_witness: HttpWitness
) -> None:
    tenant = await new_tenant(running.app)
    await running.ingest(tenant, 2)
    await running.checkpoint(tenant)
    http_witness.down = True
    await running.ingest(tenant, 3)
    resp = await running.checkpoint(tenant)
    assert resp.status_code == 201
    assert _outcomes(resp)[http_witness.url] == "unavailable"
    http_witness.down = False
    await running.ingest(tenant, 1)
    resp = await running.checkpoint(tenant)
    assert _outcomes(resp)[http_witness.url] == "accepted"
    # The proof went from size 2, the last the witness had accepted, to size 6.
    assert http_witness.size(running.origin(tenant)) == 6
    reads = await running.client.get("/v1/events", headers=tenant.headers)
    assert "audit-integrity" not in reads.headers


async def test_rewriting_a_checkpointed_event_is_caught_by_the_witnesses(
    running: Running, http_witness: HttpWitness, superuser: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await new_tenant(running.app)
    await running.ingest(tenant, 6)
    first = await running.checkpoint(tenant)
    assert set(_outcomes(first).values()) == {"accepted"}

    # The attacker rewrites event 2, rebuilds every Merkle node above it and the frontier,
    # and removes the log's own record of what it signed: only the witnesses remember.
    await rewrite_event(superuser, tenant.name, 2)
    audit = auditkit("log", "audit", "--tenant", tenant.name, env=env_for(running.settings))
    assert audit.returncode == 0, audit.stdout  # the stored tree is self-consistent again

    await running.ingest(tenant, 2)
    with capture_logs() as logs:
        resp = await running.checkpoint(tenant)
    assert resp.status_code == 201, resp.text
    assert _outcomes(resp) == {"directory": "inconsistent", http_witness.url: "inconsistent"}
    assert http_witness.size(running.origin(tenant)) == 6  # the witness kept the old head
    rejected = [e for e in logs if e["event"] == "transparency.witness_rejected"]
    assert {e["log_level"] for e in rejected} == {"critical"}
    assert {e["witness"] for e in rejected} == {"directory", http_witness.url}
    assert all(e["tenant"] == tenant.name and e["tree_size"] == 8 for e in rejected)

    reads = await running.client.get("/v1/events", headers=tenant.headers)
    assert reads.headers["audit-integrity"].startswith("compromised")
    assert "kind=witness_rejected" in reads.headers["audit-integrity"]
    refused = await running.checkpoint(tenant)
    assert refused.status_code == 423
    assert refused.json()["type"] == "urn:auditkit:problem:tamper-detected"
    export = auditkit(
        "export", "--tenant", tenant.name, "--from", "2000-01-01T00:00:00Z",
        "--to", "2100-01-01T00:00:00Z", "--out", str(tmp_path / "bundle"),
        env=env_for(running.settings),
    )  # fmt: skip
    assert export.returncode == 1
    assert "is marked compromised (witness_rejected)" in export.stderr
    metrics = (await running.client.get("/metrics")).text
    assert 'auditkit_tamper_detected_total{kind="witness_rejected"}' in metrics


async def test_the_log_refuses_to_sign_over_a_rewritten_history(
    running: Running, http_witness: HttpWitness, superuser: asyncpg.Connection
) -> None:
    tenant = await new_tenant(running.app)
    await running.ingest(tenant, 5)
    await running.checkpoint(tenant)
    await rewrite_event(superuser, tenant.name, 1, cover_tracks=False)
    await running.ingest(tenant, 1)
    with capture_logs() as logs:
        resp = await running.checkpoint(tenant)
    assert resp.status_code == 423, resp.text
    assert "no longer extends the checkpoint signed at size 5" in resp.json()["detail"]
    events = [e for e in logs if e["event"] == "transparency.checkpoint_inconsistent"]
    assert len(events) == 1
    assert events[0]["log_level"] == "critical"
    assert http_witness.size(running.origin(tenant)) == 5  # nothing new was ever signed
    audit = auditkit("log", "audit", "--tenant", tenant.name, env=env_for(running.settings))
    assert audit.returncode == 1
    assert "checkpoint at size 5 signs a root that is not the root" in audit.stdout


async def test_directory_witness_runs_as_its_own_process(
    settings: Settings, tmp_path: Path
) -> None:
    """The witness side needs only the directory and the log's public keys."""
    configured = make_settings(
        settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        tmp_path / "state",
        witness_dir=tmp_path / "witness",
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tenant = await new_tenant(app)
            await client.post(
                "/v1/events:batch", json={"events": [make_event()]}, headers=tenant.headers
            )
            await client.post("/v1/log/checkpoint", headers=tenant.headers)
            vkey = (await client.get("/v1/log/keys", headers=tenant.headers)).json()["keys"]
    # A second, independent witness gets a copy of the submission in its own inbox.
    origin_dir = next((tmp_path / "witness").iterdir())
    request = (origin_dir / "accepted" / "1.req").read_text()
    other = tmp_path / "other-witness" / origin_dir.name
    (other / "inbox").mkdir(parents=True)
    (other / "inbox" / "1.req").write_text(request)
    keys = [arg for k in vkey for arg in ("--key", k["vkey"])]
    env = env_for(configured)
    done = auditkit("log", "witness-dir", str(tmp_path / "other-witness"), *keys, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1.req: accepted" in done.stdout
    assert (other / "latest.checkpoint").read_text() == request.split("\n\n", 1)[1]
    # A forged signature on a larger checkpoint is refused, and the state stays.
    forged = request.replace("\n1\n", "\n2\n", 1)
    (other / "inbox" / "2.req").write_text(forged.replace("old 0", "old 1"))
    done = auditkit("log", "witness-dir", str(tmp_path / "other-witness"), *keys, env=env)
    assert done.returncode == 1
    assert "2.req: bad_note" in done.stdout
    assert (other / "rejected" / "2.reason").read_text().startswith("bad_note")
    assert (other / "latest.checkpoint").read_text() == request.split("\n\n", 1)[1]
