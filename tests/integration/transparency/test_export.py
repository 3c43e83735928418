"""`auditkit export` and `auditkit verify-bundle`, run as processes on real servers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reference_impl.core.settings import Settings
from tests.conftest import Tenant, make_settings, new_tenant
from tests.support.events import make_event
from tests.support.processes import auditkit, env_for

pytestmark = pytest.mark.integration


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _ingest(client: httpx.AsyncClient, tenant: Tenant, n: int) -> None:
    resp = await client.post(
        "/v1/events:batch",
        json={"events": [make_event() for _ in range(n)]},
        headers=tenant.headers,
    )
    assert resp.status_code == 201, resp.text


async def _vkey(client: httpx.AsyncClient, tenant: Tenant) -> str:
    keys = (await client.get("/v1/log/keys", headers=tenant.headers)).json()["keys"]
    return next(k["vkey"] for k in keys if k["active"])


def _offline_env() -> dict[str, str]:
    """No settings, no database, no network: only what a verifier on a laptop has."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


async def test_export_then_verify_offline(
    client: httpx.AsyncClient, app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    start = _now()
    await _ingest(client, tenant, 30)
    await asyncio.sleep(0.01)
    middle = _now()
    await asyncio.sleep(0.01)
    await _ingest(client, tenant, 10)
    end = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    env = env_for(settings)

    whole = tmp_path / "whole"
    done = auditkit(
        "export", "--tenant", tenant.name, "--from", start, "--to", end, "--out", str(whole),
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"exported 40 events (seq 0..39) of {settings.log_origin}/{tenant.name}" in done.stdout
    assert sorted(p.name for p in whole.iterdir()) == [
        "checkpoint.txt",
        "events.ndjson",
        "keys.txt",
        "manifest.json",
        "proofs.ndjson",
    ]
    # The export issued the checkpoint it needed, and the API serves the same one.
    served = (await client.get("/v1/log/checkpoint", headers=tenant.headers)).json()
    assert (whole / "checkpoint.txt").read_text() == served["note"]

    vkey = await _vkey(client, tenant)
    verified = auditkit("verify-bundle", str(whole), "--key", vkey, env=_offline_env())
    assert verified.returncode == 0, verified.stderr
    assert "bundle verified: 40 events, seq 0..39" in verified.stdout
    assert f"checkpoint tree size 40, root {served['root_hash']}" in verified.stdout
    assert f"origin     {settings.log_origin}/{tenant.name}" in verified.stdout

    report = auditkit("verify-bundle", str(whole), "--key", vkey, "--json", env=_offline_env())
    assert json.loads(report.stdout)["events"] == 40

    # A later window is a contiguous run of the chain, proven against the same checkpoint.
    late = tmp_path / "late"
    done = auditkit(
        "export", "--tenant", tenant.name, "--from", middle, "--to", end, "--out", str(late),
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    verified = auditkit("verify-bundle", str(late), "--key", vkey, env=_offline_env())
    assert "bundle verified: 10 events, seq 30..39" in verified.stdout


async def test_every_kind_of_change_is_named(
    client: httpx.AsyncClient, app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    start = _now()
    await _ingest(client, tenant, 8)
    bundle = tmp_path / "bundle"
    done = auditkit(
        "export", "--tenant", tenant.name, "--from", start, "--to", _later(), "--out",
        str(bundle), env=env_for(settings),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    vkey = await _vkey(client, tenant)
    events = (bundle / "events.ndjson").read_text().splitlines(keepends=True)
    into_event_5 = sum(len(line) for line in events[:5]) + events[5].index('"canonical":"') + 20
    proofs = (bundle / "proofs.ndjson").read_text().splitlines(keepends=True)
    into_proof_2 = sum(len(line) for line in proofs[:2]) + proofs[2].index('"proof":["') + 12
    note = (bundle / "checkpoint.txt").read_text()
    unverified = "checkpoint.txt: the checkpoint does not verify"
    cases = [
        ("events.ndjson", into_event_5, "event seq 5 (events.ndjson line 6)"),
        ("proofs.ndjson", into_proof_2, "inclusion proof of seq 2 (proofs.ndjson line 3)"),
        ("checkpoint.txt", len(note.encode()) - 10, unverified),
        ("checkpoint.txt", 3, unverified),
        ("keys.txt", 10, "keys.txt line 1"),
        ("manifest.json", 5, "manifest.json"),
    ]
    for name, offset, named in cases:
        copy = tmp_path / f"copy-{name}-{offset}"
        shutil.copytree(bundle, copy)
        _flip(copy / name, offset)
        failed = auditkit("verify-bundle", str(copy), "--key", vkey, env=_offline_env())
        assert failed.returncode == 1, (name, offset, failed.stdout)
        line = failed.stderr.strip()
        assert "\n" not in line
        assert line.startswith("error: bundle does not verify: "), line
        assert named in line, (name, line)

    other = make_settings(
        "postgresql://unused/x", "redis://unused", tmp_path,
        checkpoint_keys={"someone-else": base64.b64encode(b"s" * 32).decode()},
        active_checkpoint_key="someone-else",
    )  # fmt: skip
    from reference_impl.transparency.service import CheckpointKeys

    stranger = CheckpointKeys.from_settings(other).signer.verifier.vkey
    failed = auditkit("verify-bundle", str(bundle), "--key", stranger, env=_offline_env())
    assert failed.returncode == 1
    assert "no signature from a trusted key" in failed.stderr


def _later() -> str:
    return (datetime.now(UTC) + timedelta(seconds=1)).isoformat()


def test_export_refusals(settings: Settings, tmp_path: Path) -> None:
    env = env_for(settings)
    done = auditkit(
        "export", "--tenant", "nobody", "--from", "2020-01-01T00:00:00Z", "--to",
        "2020-02-01T00:00:00Z", "--out", str(tmp_path / "b"), env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no event of tenant 'nobody' was recorded in that range" in done.stderr
    done = auditkit(
        "export", "--tenant", "t", "--from", "2020-01-01", "--to", "2020-02-01T00:00:00Z",
        "--out", str(tmp_path / "b"), env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--from needs a UTC offset" in done.stderr
    done = auditkit("verify-bundle", str(tmp_path), "--key", "nonsense", env=_offline_env())
    assert done.returncode == 2
    assert "--key is not a verifier key" in done.stderr


def test_verify_bundle_imports_only_the_integrity_package(tmp_path: Path) -> None:
    """The offline verifier's module loads no web framework, database or settings code."""
    probe = (
        "import sys; import reference_impl.integrity.bundle as b; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'starlette', 'sqlalchemy', 'asyncpg', 'redis', 'pydantic_settings'} "
        "or m.startswith('reference_impl.core')]; print(bad)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
