"""Key rotation: the runnable half of `docs/playbooks/key-rotation.md`.

```text
python -m playbooks.key_rotation drill     # rehearse every rotation on private servers
```

`drill` starts its own PostgreSQL and Valkey in a temporary directory, records events under
the first keys, then runs each step of the page in order (new API key, old one revoked, new
signing key, new key-encryption key) and checks after each that what the page promises
holds: the revoked key is refused, events signed before the rotation still verify, no event
was rewritten. It exits 0 only if every step behaved as the page says.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["STEPS", "drill", "main"]

# --8<-- [start:steps]
# Each step: what it does, and the command an operator runs (environment in $VARS).
STEPS: list[tuple[str, str]] = [
    ("See the tenant's keys and when each was last used", "auditkit keys list --tenant {tenant}"),
    (
        "Issue the replacement API key, with the same roles",
        "auditkit keys create --tenant {tenant} --role ingest --role reader --name ehr-2027",
    ),
    ("Revoke the old API key once the client uses the new one", "auditkit keys revoke {prefix}"),
    (
        "Add a signing key and make it active (old keys stay in the ring)",
        'export AUDIT_SIGNING_KEYS=\'{{"{old_id}": "{old_secret}", "sig-2027": "{new_secret}"}}\''
        " AUDIT_ACTIVE_SIGNING_KEY=sig-2027",
    ),
    ("Check that every event still verifies", "auditkit verify --tenant {tenant}"),
    ("Make a new key-encryption key active and re-wrap the data keys", "auditkit keys rotate"),
]
# --8<-- [end:steps]


def _secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _event(n: int) -> dict[str, object]:
    return {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": "fhir.patient.read",
        "category": "data_access",
        "fhir_action": "R",
        "outcome": "success",
        "principal": {"id": "dr.alice", "type": "user"},
        "target": {"resource_type": "Patient", "resource_id": f"p-{n}", "subject_id": f"p-{n}"},
        "data_classification": "PHI",
        "purpose_of_use": "TREAT",
        "session": {"ip_address": f"10.0.0.{n % 250 + 1}"},
    }


class _Drill:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.failures: list[str] = []

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        args = shlex.split(command)
        return subprocess.run(
            [sys.executable, "-m", "reference_impl", *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def check(self, ok: bool, what: str) -> None:
        print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
        if not ok:
            self.failures.append(what)


@contextmanager
def _servers(root: Path) -> Iterator[dict[str, str]]:
    from reference_impl.core.embedded import EmbeddedPostgres, EmbeddedValkey

    pg = EmbeddedPostgres(root / "postgres", settings={"fsync": "off"})
    valkey = EmbeddedValkey(root / "valkey")
    pg.start()
    valkey.start()
    try:
        pg.ensure_database("auditkit")
        yield {"AUDIT_DATABASE_URL": pg.url("auditkit"), "AUDIT_REDIS_URL": valkey.url()}
    finally:
        valkey.stop()
        pg.stop()


@contextmanager
def _service(env: dict[str, str], root: Path) -> Iterator[str]:
    from reference_impl.core.embedded import find_free_port

    port = find_free_port()
    log = (root / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_impl", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


# --8<-- [start:drill]
def drill() -> int:
    """Rehearse every rotation on private servers; 0 if each step did what the page says."""
    root = Path(tempfile.mkdtemp(prefix="auditkit-keyrotation-"))
    old_id, old_secret = "sig-2026", _secret()
    with _servers(root) as urls:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
        env.update(urls)
        env.update(
            AUDIT_PROFILE="test",
            AUDIT_STATE_DIR=str(root / "state"),
            AUDIT_SIGNING_KEYS=json.dumps({old_id: old_secret}),
            AUDIT_ACTIVE_SIGNING_KEY=old_id,
            AUDIT_API_KEY_CACHE_SECONDS="0",
        )
        d = _Drill(root, env)
        d.check(d.run("auditkit migrate").returncode == 0, "the database is migrated")
        tenant = "clinic-rotation"
        print("before: a client records events with the first keys", flush=True)
        old_key = d.run(
            f"auditkit keys create --tenant {tenant} --role ingest --role reader"
        ).stdout.strip()
        with _service(env, root) as url:
            for n in range(5):
                r = httpx.post(f"{url}/v1/events", json=_event(n), headers={"X-API-Key": old_key})
                d.check(r.status_code == 201, f"event {n} recorded under {old_id}")
        prefix = old_key.split("_")[1]
        values = {"tenant": tenant, "prefix": prefix, "old_id": old_id}
        values |= {"old_secret": old_secret, "new_secret": _secret()}
        steps = [command.format(**values) for _, command in STEPS]

        print(f"1. {STEPS[0][0]}", flush=True)
        d.check(prefix in d.run(steps[0]).stdout, "the old key is listed")
        print(f"2. {STEPS[1][0]}", flush=True)
        new_key = d.run(steps[1]).stdout.strip()
        d.check(new_key.startswith("ak_"), "a new key is issued")
        print(f"3. {STEPS[2][0]}", flush=True)
        d.check(d.run(steps[2]).returncode == 0, "the old key is revoked")
        print(f"4. {STEPS[3][0]}", flush=True)
        for assignment in shlex.split(steps[3])[1:]:
            name, _, value = assignment.partition("=")
            env[name] = value
        with _service(env, root) as url:
            refused = httpx.post(
                f"{url}/v1/events", json=_event(90), headers={"X-API-Key": old_key}
            )
            d.check(refused.status_code == 401, "the revoked key is refused")
            r = httpx.post(f"{url}/v1/events", json=_event(91), headers={"X-API-Key": new_key})
            d.check(
                r.status_code == 201 and r.json()["key_id"] == "sig-2027", "new events: sig-2027"
            )
        print(f"5. {STEPS[4][0]}", flush=True)
        verified = d.run(steps[4])
        d.check(verified.returncode == 0, "events of both keys verify")
        print(f"6. {STEPS[5][0]}", flush=True)
        rotated = d.run(steps[5])
        d.check("no event was changed" in rotated.stdout, "data keys re-wrapped")
        with _service(env, root) as url:
            read = httpx.get(f"{url}/v1/events?limit=1&order=asc", headers={"X-API-Key": new_key})
            d.check(
                read.json()["items"][0]["session"]["ip_address"] == "10.0.0.1",
                "encrypted fields still read after the rotation",
            )
        d.check(d.run(steps[4]).returncode == 0, "the chain still verifies")
    print("drill passed" if not d.failures else f"drill FAILED: {d.failures}", flush=True)
    return 0 if not d.failures else 1


# --8<-- [end:drill]


def main(argv: list[str] | None = None) -> int:
    """`python -m playbooks.key_rotation drill`."""
    parser = argparse.ArgumentParser(prog="python -m playbooks.key_rotation")
    parser.add_argument("command", choices=["drill"])
    parser.parse_args(argv)
    return drill()


if __name__ == "__main__":
    raise SystemExit(main())
