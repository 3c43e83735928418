"""The `auditkit` command as a real process against the suite's servers."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from reference_impl.core.migrate import head_revisions
from reference_impl.core.settings import Settings
from tests.conftest import Tenant
from tests.support import tamper
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for

pytestmark = pytest.mark.integration


async def test_keys_create_list_revoke(settings: Settings, client: httpx.AsyncClient) -> None:
    env = env_for(settings)
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    created = auditkit("keys", "create", "--tenant", tenant, "--name", "ehr", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ak_")
    resp = await client.post("/v1/events", json=make_event(), headers={"X-API-Key": key})
    assert resp.status_code == 201
    listed = auditkit("keys", "list", "--tenant", tenant, env=env)
    prefix = key.split("_")[1]
    assert prefix in listed.stdout and key not in listed.stdout
    revoked = auditkit("keys", "revoke", prefix, env=env)
    assert revoked.returncode == 0
    again = auditkit("keys", "revoke", prefix, env=env)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    resp = await client.post("/v1/events", json=make_event(), headers={"X-API-Key": key})
    assert resp.status_code == 401


def test_bad_tenant_name_is_a_one_line_error(settings: Settings) -> None:
    done = auditkit("keys", "create", "--tenant", "no spaces please", env=env_for(settings))
    assert done.returncode == 2
    assert done.stderr.startswith("error:")
    assert done.stderr.count("\n") == 1


async def test_verify_exit_codes_and_report(
    settings: Settings, client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    env = env_for(settings)
    events = [make_event() for _ in range(5)]
    await client.post("/v1/events:batch", json={"events": events}, headers=tenant.headers)
    ok = auditkit("verify", "--tenant", tenant.name, "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    [result] = json.loads(ok.stdout)
    assert result == {**result, "tenant": tenant.name, "valid": True, "checked": 5}

    await tamper.modify_canonical(superuser, tenant.name, 3)
    bad = auditkit("verify", "--tenant", tenant.name, env=env)
    assert bad.returncode == 1
    assert "TAMPERED" in bad.stdout
    assert "modified" in bad.stdout
    as_json = json.loads(auditkit("verify", "--tenant", tenant.name, "--json", env=env).stdout)
    assert (as_json[0]["first_broken_seq"], as_json[0]["kind"]) == (3, "modified")


def test_verify_all_tenants_fails_if_any_is_broken(settings: Settings) -> None:
    done = auditkit("verify", "--json", env=env_for(settings))
    results = json.loads(done.stdout)
    assert len(results) >= 1
    assert done.returncode == (0 if all(r["valid"] for r in results) else 1)


def test_migrate_reports_the_revision(settings: Settings) -> None:
    done = auditkit("migrate", env=env_for(settings))
    assert done.returncode == 0, done.stderr
    heads = ", ".join(sorted(head_revisions()))
    assert f"database at revision {heads}" in done.stdout


def test_prod_refuses_embedded_servers(tmp_path: Path) -> None:
    env = {"AUDIT_PROFILE": "prod", "AUDIT_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = auditkit("serve", env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: profile prod refuses the embedded database: set AUDIT_DATABASE_URL"
    )
    assert not (tmp_path / "postgres").exists()


def test_prod_refuses_development_keys(settings: Settings) -> None:
    env = env_for(settings, AUDIT_PROFILE="prod")
    env["AUDIT_SIGNING_KEYS"] = json.dumps({"dev-1": base64.b64encode(b"d" * 32).decode()})
    env["AUDIT_ACTIVE_SIGNING_KEY"] = "dev-1"
    done = auditkit("serve", env=env)
    assert done.returncode == 2
    assert "refuses development signing key 'dev-1'" in done.stderr


async def test_prod_serve_does_not_migrate(settings: Settings, database_url: str) -> None:
    empty = f"auditkit_empty_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{empty}"')
    finally:
        await conn.close()
    env = env_for(settings, AUDIT_PROFILE="prod")
    env["AUDIT_DATABASE_URL"] = database_url.rsplit("/", 1)[0] + "/" + empty
    done = auditkit("serve", env=env)
    assert done.returncode == 2
    assert "run `auditkit migrate` first" in done.stderr
    migrated = auditkit("migrate", env=env)
    assert migrated.returncode == 0
