"""Tamper response: the runnable half of `docs/playbooks/tamper-response.md`.

```text
python -m playbooks.tamper_response diagnose --tenant T   # run every diagnosis step
python -m playbooks.tamper_response drill                 # rehearse on private servers
```

`diagnose` runs the page's diagnosis commands, in order, against the configured service
(the `AUDIT_*` settings) and says which layer broke. `drill` rehearses the whole alert on
embedded PostgreSQL and Valkey in a temporary directory: events are checkpointed and
witnessed, someone with superuser access rewrites one of them and rebuilds the Merkle tree
to hide it, the next checkpoint is refused by the witness, and the playbook's diagnosis and
recovery are run until the witness accepts the log again. It exits 0 only if every step
behaved as the page says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from reference_impl.integrity.merkle import MemoryTree, leaf_hash

__all__ = ["DIAGNOSIS", "diagnose", "drill", "main", "restore_event", "rewrite_event"]

# --8<-- [start:diagnosis]
DIAGNOSIS: list[tuple[str, str]] = [
    ("Which tenants are marked compromised, and why", "auditkit integrity status"),
    ("Which witness refused, and what size it holds", "auditkit log witnesses --tenant {tenant}"),
    (
        "Do the stored events still give the root the witness holds?",
        "auditkit log check-witnessed --tenant {tenant}",
    ),
    ("Which event was changed (the HMAC chain)", "auditkit verify --tenant {tenant}"),
    ("Was the Merkle tree rebuilt to match?", "auditkit log audit --tenant {tenant}"),
]
# --8<-- [end:diagnosis]


# -- what an attacker with superuser access does, and what a restore undoes ----------------


async def _rebuild_path(db: asyncpg.Connection, tenant: str, seq: int) -> None:
    """Recompute the stored Merkle nodes above ``seq`` and the frontier from the events."""
    rows = await db.fetch(
        "SELECT canonical FROM audit_events WHERE tenant_id = $1 ORDER BY seq", tenant
    )
    tree = MemoryTree([leaf_hash(bytes(r["canonical"])) for r in rows])
    level, index = 0, seq
    while True:
        try:
            value = tree.subtree(level, index)
        except KeyError:
            break
        await db.execute(
            "UPDATE merkle_nodes SET hash = $4 WHERE tenant_id = $1 AND level = $2 AND idx = $3",
            tenant,
            level,
            index,
            value,
        )
        level, index = level + 1, index // 2
    size, start, frontier = tree.size, 0, []
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            frontier.append(tree.subtree(bit, start >> bit))
            start += 1 << bit
    await db.execute(
        "UPDATE merkle_frontiers SET frontier = $2 WHERE tenant_id = $1", tenant, frontier
    )


# --8<-- [start:rewrite]
async def rewrite_event(
    db: asyncpg.Connection, tenant: str, seq: int, *, cover_tracks: bool = True
) -> bytes:
    """Rewrite one stored event and rebuild the Merkle tree over it; returns the original.

    This is the attack the witnesses exist for: the triggers are bypassed as only a
    superuser can (`session_replication_role = replica`), the event's canonical bytes are
    changed, and every node on its path and the frontier are recomputed, so the stored tree
    is self-consistent again. With ``cover_tracks`` the log's own record of the checkpoints
    it signed is deleted too, so that the log signs the rewritten tree and only the
    witnesses still hold the old root; without, the log refuses to sign by itself.
    """
    await db.execute("SET session_replication_role = replica")
    try:
        original = bytes(
            await db.fetchval(
                "SELECT canonical FROM audit_events WHERE tenant_id = $1 AND seq = $2",
                tenant,
                seq,
            )
        )
        content = json.loads(original)
        content["outcome"] = "failure" if content.get("outcome") != "failure" else "success"
        forged = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
        await db.execute(
            "UPDATE audit_events SET canonical = $3 WHERE tenant_id = $1 AND seq = $2",
            tenant,
            seq,
            forged,
        )
        await _rebuild_path(db, tenant, seq)
        if cover_tracks:
            await db.execute("DELETE FROM checkpoints WHERE tenant_id = $1", tenant)
    finally:
        await db.execute("SET session_replication_role = DEFAULT")
    return original


# --8<-- [end:rewrite]


async def restore_event(
    db: asyncpg.Connection, tenant: str, seq: int, canonical: bytes, witnessed_size: int
) -> None:
    """Put an event's genuine bytes back, as a point-in-time restore does.

    The restore also drops the checkpoints the log signed over the rewritten history
    (those after the size the witnesses hold): a restore to before the rewrite would not
    have them either.
    """
    await db.execute("SET session_replication_role = replica")
    try:
        await db.execute(
            "UPDATE audit_events SET canonical = $3 WHERE tenant_id = $1 AND seq = $2",
            tenant,
            seq,
            canonical,
        )
        await _rebuild_path(db, tenant, seq)
        await db.execute(
            "DELETE FROM checkpoints WHERE tenant_id = $1 AND tree_size > $2",
            tenant,
            witnessed_size,
        )
    finally:
        await db.execute("SET session_replication_role = DEFAULT")


# -- diagnose ---------------------------------------------------------------------------


def _auditkit(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "auditkit"
    return subprocess.run(
        [sys.executable, "-m", "reference_impl", *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def diagnose(tenant: str, *, env: dict[str, str] | None = None) -> int:
    """Run every diagnosis step for ``tenant``; print what each found and a verdict.

    Returns:
        0 when no step found a problem, 1 otherwise.
    """
    failed: list[str] = []
    for purpose, template in DIAGNOSIS:
        command = template.format(tenant=shlex.quote(tenant))
        done = _auditkit(command, env)
        mark = "ok" if done.returncode == 0 else f"FOUND (exit {done.returncode})"
        print(f"## {purpose}\n$ {command}\n{done.stdout}{done.stderr}-> {mark}\n")
        if done.returncode != 0:
            failed.append(template.split(" --")[0])
    if not failed:
        print("verdict: nothing found; the alert may have been cleared already")
        return 0
    print("verdict: the log of", tenant, "changed; steps that found it:", ", ".join(failed))
    return 1


# -- drill ------------------------------------------------------------------------------


@dataclass
class DrillReport:
    """What the drill expected at each step, and what happened."""

    steps: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one expectation."""
        self.steps.append((name, ok, detail))
        print(f"[{'pass' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""))

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return all(ok for _, ok, _ in self.steps)


async def _drill(root: Path, report: DrillReport, events: int = 20, victim: int = 7) -> None:
    import httpx
    from structlog.testing import capture_logs

    from reference_impl.api.app import create_app
    from reference_impl.core.backends import running_backends
    from reference_impl.core.db import scoped
    from reference_impl.core.migrate import upgrade
    from reference_impl.core.settings import Settings
    from reference_impl.core.state import with_dev_secrets
    from reference_impl.events.verification import verify_tenant
    from reference_impl.integrity import KeyRing
    from reference_impl.integrity.checkpoint import open_checkpoint
    from reference_impl.transparency import service
    from reference_impl.transparency.witnesses import DirectoryWitness

    base = Settings(
        profile="test",
        state_dir=root / "state",
        witness_dir=root / "witness",
        checkpoint_interval_s=0,
        verify_interval_s=0,
    )
    settings: Settings = with_dev_secrets(base)
    with running_backends(settings) as resolved:
        url = resolved.database_url.get_secret_value()  # type: ignore[union-attr]
        await asyncio.to_thread(upgrade, url)
        app = create_app(resolved)
        db = await asyncpg.connect(url)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://drill") as api:
                    created = await app.state.api_keys.create(
                        "drill", "tamper drill", roles=("ingest", "reader", "auditor")
                    )
                    headers = {"Authorization": f"Bearer {created.key}"}

                    async def ingest(n: int) -> None:
                        batch = {"events": [_event() for _ in range(n)]}
                        resp = await api.post("/v1/events:batch", json=batch, headers=headers)
                        resp.raise_for_status()

                    async def checkpoint() -> httpx.Response:
                        return await api.post("/v1/log/checkpoint", headers=headers)

                    await ingest(events)
                    first = await checkpoint()
                    outcome = first.json()["witnesses"][0]["outcome"]
                    report.check("the witness accepts the first checkpoint", outcome == "accepted")

                    original = await rewrite_event(db, "drill", victim)
                    await ingest(5)
                    with capture_logs() as logs:
                        refused = await checkpoint()
                    outcome = refused.json()["witnesses"][0]["outcome"]
                    report.check("the witness refuses the next one", outcome == "inconsistent")
                    alerts = [e for e in logs if e["event"] == "transparency.witness_rejected"]
                    report.check(
                        "a CRITICAL transparency.witness_rejected alert is raised",
                        any(e["log_level"] == "critical" for e in alerts),
                    )
                    reads = await api.get("/v1/events", headers=headers)
                    report.check(
                        "reads carry the Audit-Integrity warning",
                        "compromised" in reads.headers.get("audit-integrity", ""),
                    )
                    blocked = await checkpoint()
                    report.check("no checkpoint is built over it", blocked.status_code == 423)

                    # Diagnosis, as the page's steps do it.
                    transparency = app.state.transparency
                    assert resolved.witness_dir is not None
                    witness = DirectoryWitness(resolved.witness_dir, transparency.keys.verifiers)
                    note = witness.latest_note(transparency.origin("drill"))
                    held = open_checkpoint(note or "", transparency.keys.verifiers)
                    report.check("the witness holds size 20", held.size == events)
                    async with scoped(app.state.engine, "drill") as conn:
                        compared = await service.compare_with_witnessed(conn, "drill", held)
                    report.check(
                        "the stored events no longer give the witnessed root",
                        not compared.consistent,
                    )
                    keyring = KeyRing(
                        resolved.signing_secrets,
                        resolved.active_signing_key or "",
                    )
                    chain = (await verify_tenant(app.state.engine, keyring, "drill")).result
                    report.check(
                        f"the chain names seq {victim} as modified",
                        chain.first_broken_seq == victim and str(chain.kind) == "modified",
                        chain.detail,
                    )

                    # Recovery: restore, re-check, clear, checkpoint.
                    await restore_event(db, "drill", victim, original, held.size)
                    async with scoped(app.state.engine, "drill") as conn:
                        compared = await service.compare_with_witnessed(conn, "drill", held)
                    report.check(
                        "after the restore the witnessed root is back", compared.consistent
                    )
                    cleared = await app.state.monitor.clear("drill")
                    report.check("the compromised mark is cleared", cleared.result.valid)
                    again = await checkpoint()
                    outcome = again.json()["witnesses"][0]["outcome"] if again.is_success else ""
                    report.check(
                        "the witness accepts the log again",
                        again.status_code == 201 and outcome == "accepted",
                        f"tree size {again.json().get('checkpoint', {}).get('tree_size')}",
                    )
        finally:
            await db.close()


def _event() -> dict[str, Any]:
    import uuid

    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        "action": "fhir.patient.read",
        "category": "data_access",
        "fhir_action": "R",
        "outcome": "success",
        "principal": {"id": "dr.drill", "type": "user", "roles": ["physician"]},
        "target": {"resource_type": "Patient", "resource_id": "pat-1", "subject_id": "pat-1"},
        "data_classification": "PHI",
        "purpose_of_use": "TREAT",
    }


def drill() -> int:
    """Rehearse the alert on private embedded servers; 0 if everything behaved."""
    report = DrillReport()
    with tempfile.TemporaryDirectory(prefix="auditkit-tamper-drill-") as tmp:
        asyncio.run(_drill(Path(tmp), report))
    passed = sum(ok for _, ok, _ in report.steps)
    print(f"drill {'passed' if report.passed else 'FAILED'}: {passed}/{len(report.steps)} steps")
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m playbooks.tamper_response`."""
    parser = argparse.ArgumentParser(prog="python -m playbooks.tamper_response")
    sub = parser.add_subparsers(dest="command", required=True)
    diag = sub.add_parser("diagnose", help="run every diagnosis step for one tenant")
    diag.add_argument("--tenant", required=True)
    sub.add_parser("drill", help="rehearse on private embedded servers")
    args = parser.parse_args(argv)
    if args.command == "diagnose":
        return diagnose(args.tenant)
    return drill()


if __name__ == "__main__":
    raise SystemExit(main())
