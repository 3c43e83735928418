"""The blocks of docs/architecture/integrity.md, checked against the code."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reference_impl.core.settings import Settings
from reference_impl.integrity.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from reference_impl.integrity.merkle import MemoryTree, leaf_hash
from reference_impl.transparency.service import CheckpointKeys
from tests.conftest import new_tenant
from tests.docs.blocks import REPO_ROOT, docs_block, run_bash_block
from tests.support.events import make_event
from tests.support.processes import env_for

pytestmark = pytest.mark.docs

PAGE = "architecture/integrity.md"


def _exported(block: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The AUDIT_* variables a block exports, as bash evaluates them."""
    script = block + '\nenv -0 | grep -z "^AUDIT_" || true'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        check=True,
        timeout=30,
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def test_the_example_checkpoint_is_a_real_signed_checkpoint() -> None:
    """The page's note is what the code signs for the page's example, byte for byte."""
    signer = NoteSigner("audit.example.org/ckpt-2026", bytes(range(32)))
    tree = MemoryTree([leaf_hash(f"event {i}".encode()) for i in range(3)])
    expected = sign_checkpoint(
        Checkpoint("auditkit.example.org/log/clinic-7", 3, tree.root()), signer
    )
    assert docs_block(PAGE, "ig-checkpoint-example") == expected
    vkey = docs_block(PAGE, "ig-vkey-example").strip()
    assert vkey == signer.verifier.vkey
    checkpoint = open_checkpoint(expected, [NoteVerifier.from_vkey(vkey)])
    assert (checkpoint.origin, checkpoint.size) == ("auditkit.example.org/log/clinic-7", 3)


def test_the_rotation_block_keeps_the_old_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    old_seed = base64.b64encode(b"o" * 32).decode()
    env = _exported(docs_block(PAGE, "ig-rotate"), {"OLD_SEED": old_seed})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    keys = CheckpointKeys.from_settings(settings)
    assert keys.active == "audit.example.org/ckpt-2027"
    assert settings.checkpoint_seeds["audit.example.org/ckpt-2026"] == b"o" * 32
    assert len(keys.verifiers) == 2


def test_the_witness_block_is_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _exported(docs_block(PAGE, "ig-witness-env")).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.witness_dir == Path("/var/lib/auditkit-witness")
    assert settings.witness_urls == ["https://witness.example.org/add-checkpoint"]
    assert settings.checkpoint_interval_s == 300


def test_the_bundle_table_names_the_files_the_code_writes() -> None:
    from reference_impl.integrity.bundle import BUNDLE_FILES

    text = (REPO_ROOT / "docs" / PAGE).read_text()
    named = re.findall(r"^\| `([a-z]+\.[a-z]+)` \|", text, re.MULTILINE)
    assert named == list(BUNDLE_FILES)


@pytest.mark.integration
@pytest.mark.slow
async def test_the_export_block_writes_a_bundle_that_verifies(
    client: httpx.AsyncClient, app: object, settings: Settings, tmp_path: Path
) -> None:
    tenant = await new_tenant(app)
    start = datetime.now(UTC)
    resp = await client.post(
        "/v1/events:batch", json={"events": [make_event() for _ in range(5)]},
        headers=tenant.headers,
    )  # fmt: skip
    assert resp.status_code == 201
    keys = (await client.get("/v1/log/keys", headers=tenant.headers)).json()["keys"]
    vkey = next(k["vkey"] for k in keys if k["active"])
    env = env_for(
        settings,
        TENANT=tenant.name,
        FROM=start.isoformat(),
        TO=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        BUNDLE=str(tmp_path / "bundle"),
        VKEY=vkey,
    )
    done = await asyncio.to_thread(run_bash_block, PAGE, "ig-export", env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exported 5 events (seq 0..4)" in done.stdout
    assert "bundle verified: 5 events, seq 0..4" in done.stdout
