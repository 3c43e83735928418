"""Every command of docs/playbooks/tamper-response.md, run as written on a tampered log.

The scenario is the one the page is for: events are checkpointed and witnessed, a superuser
rewrites one and rebuilds the Merkle tree over it, and the next checkpoint is refused by the
directory witness. Each diagnosis block must then find what the page says it finds, the
evidence block must save it, and after a restore the recovery block must bring the witness
back. The drill block runs the module's own rehearsal on private servers.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from playbooks import tamper_response
from playbooks.tamper_response import restore_event, rewrite_event
from reference_impl.api.app import create_app
from reference_impl.core.settings import Settings
from tests.conftest import Tenant, make_settings, new_tenant
from tests.docs.blocks import docs_block, run_bash_block
from tests.support.events import make_event
from tests.support.processes import env_for

pytestmark = [pytest.mark.docs, pytest.mark.integration, pytest.mark.slow]

PAGE = "playbooks/tamper-response.md"
DIAGNOSIS_BLOCKS = [
    "tr-status",
    "tr-witnesses",
    "tr-check-witnessed",
    "tr-verify-chain",
    "tr-audit-tree",
]


@dataclass
class Incident:
    """A tenant whose witnessed history was rewritten, and the shell environment."""

    app: FastAPI
    client: httpx.AsyncClient
    tenant: Tenant
    env: dict[str, str]
    original: bytes
    witnessed: int


VICTIM = 3


@pytest.fixture
async def incident(
    settings: Settings, tmp_path: Path, superuser: asyncpg.Connection
) -> AsyncIterator[Incident]:
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
            batch = {"events": [make_event() for _ in range(10)]}
            assert (
                await client.post("/v1/events:batch", json=batch, headers=tenant.headers)
            ).is_success
            first = await client.post("/v1/log/checkpoint", headers=tenant.headers)
            assert first.json()["witnesses"][0]["outcome"] == "accepted"
            original = await rewrite_event(superuser, tenant.name, VICTIM)
            batch = {"events": [make_event() for _ in range(2)]}
            assert (
                await client.post("/v1/events:batch", json=batch, headers=tenant.headers)
            ).is_success
            refused = await client.post("/v1/log/checkpoint", headers=tenant.headers)
            assert refused.json()["witnesses"][0]["outcome"] == "inconsistent"
            env = env_for(
                configured,
                AUDIT_WITNESS_DIR=str(tmp_path / "witness"),
                TENANT=tenant.name,
                EVIDENCE=str(tmp_path / "evidence"),
            )
            yield Incident(app, client, tenant, env, original, 10)


def _run(block: str, env: dict[str, str]) -> tuple[int, str]:
    done = run_bash_block(PAGE, block, env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_the_page_lists_the_modules_diagnosis_steps() -> None:
    """The numbered blocks are the module's DIAGNOSIS steps, in the same order."""
    commands = [docs_block(PAGE, block).strip() for block in DIAGNOSIS_BLOCKS]
    expected = [
        "uv run " + template.format(tenant='"$TENANT"') for _, template in tamper_response.DIAGNOSIS
    ]
    assert commands == expected


async def test_diagnosis_finds_the_rewrite_and_recovery_brings_the_witness_back(
    incident: Incident, superuser: asyncpg.Connection, tmp_path: Path
) -> None:
    env, name = incident.env, incident.tenant.name

    code, out = _run("tr-status", env)
    assert code == 1
    assert name in out

    code, out = _run("tr-witnesses", env)
    assert code == 1
    assert "inconsistent" in out
    assert re.search(r"directory\s.*\b10\b", out), out  # the witness still holds size 10

    code, out = _run("tr-check-witnessed", env)
    assert code == 1
    assert "CHANGED after the witness saw it" in out

    code, out = _run("tr-verify-chain", env)
    assert code == 1
    assert "TAMPERED" in out
    assert f"row at seq {VICTIM} does not verify" in out

    code, out = _run("tr-audit-tree", env)
    assert code == 0, out  # the attacker rebuilt the tree: consistent, yet not witnessed
    assert "consistent" in out

    code, out = _run("tr-diagnose", env)
    assert code == 1
    assert f"verdict: the log of {name} changed" in out

    code, out = _run("tr-evidence", env)
    assert code == 0, out
    evidence = tmp_path / "evidence"
    assert json.loads((evidence / "witnessed.json").read_text())["consistent"] is False
    assert json.loads((evidence / "chain.json").read_text())[0]["first_broken_seq"] == VICTIM
    assert any((evidence / "witness").rglob("latest.checkpoint"))

    # The restore the page describes: the genuine row back, later checkpoints gone.
    await restore_event(superuser, name, VICTIM, incident.original, incident.witnessed)
    code, out = _run("tr-recover", env)
    assert code == 0, out
    assert "the stored history is the one the witness saw" in out
    assert "mark cleared" in out
    assert "directory=accepted" in out


def test_the_drill_passes() -> None:
    done = run_bash_block(PAGE, "tr-drill", timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "drill passed: 11/11 steps" in done.stdout
