"""The servers and service processes one benchmark run owns.

A run starts its own PostgreSQL and Valkey on free loopback ports, with their data in a
temporary directory, migrates the database, creates tenants with API keys, and runs the
service as real processes: `auditkit serve` (with `--workers` processes) and, when asked,
`auditkit worker`. The machine's own database and queue servers are never touched.

The servers run with production durability: PostgreSQL with `fsync`, `synchronous_commit`
and `full_page_writes` on, Valkey with its append-only file fsynced on every write.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from chaos.harness import REPO_ROOT, ServiceProcess
from reference_impl.core.embedded import EmbeddedPostgres, EmbeddedValkey, find_free_port

__all__ = [
    "DATABASE",
    "POSTGRES_SETTINGS",
    "BenchStack",
    "TenantKey",
    "process_tree",
    "wait_until_listening",
]

DATABASE = "auditkit"

# --8<-- [start:postgres-settings]
# Durable as in production (fsync, synchronous commit, full page writes: the defaults),
# sized as a small dedicated server would be, with checkpoints spaced out so that one does
# not land in the middle of a short measurement.
POSTGRES_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "1GB",
    "wal_buffers": "64MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
# --8<-- [end:postgres-settings]


@dataclass(frozen=True)
class TenantKey:
    """A tenant of the run and one API key of it."""

    name: str
    key: str


def _secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its children (none when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_rss(pid: int | None) -> int:
    """Resident memory of a process and its children, in bytes (0 when it is gone)."""
    total = 0
    for proc in process_tree(pid) if pid is not None else []:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def wait_until_listening(pid: int, port: int, processes: int, timeout: float = 120.0) -> None:
    """Wait until ``processes`` processes of ``pid``'s tree listen on ``port``.

    The first process to answer a health check is not all of them: load started then would
    open every connection on the processes that happen to be ready.

    Raises:
        TimeoutError: Fewer processes listen after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _listening(pid, port) >= processes:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {processes} processes listen on port {port}")
        time.sleep(0.2)


def _listening(pid: int, port: int) -> int:
    """Processes of ``pid``'s tree with a listening socket on ``port``."""
    return sum(
        any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in _tcp(proc))
        for proc in process_tree(pid)
    )


def _tcp(proc: psutil.Process) -> list[Any]:
    """The TCP sockets of a process (none when it is gone or not readable)."""
    try:
        return list(proc.net_connections(kind="tcp"))
    except psutil.Error:
        return []


class BenchStack:
    """PostgreSQL, Valkey, the API processes and a queue worker of one benchmark run.

    Args:
        work_dir: Where logs go (server data lives in a temporary directory).
        api_workers: Processes of `auditkit serve --workers N`.
        settings: Extra `AUDIT_*` settings of the service (name without the prefix).
    """

    def __init__(
        self, work_dir: Path, *, api_workers: int = 2, settings: Mapping[str, str] | None = None
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.api_workers = api_workers
        self.extra = dict(settings or {})
        # PostgreSQL runs as an unprivileged user that must reach its files.
        self.root = Path(tempfile.mkdtemp(prefix="auditkit-bench-"))
        self.log_dir = self.work_dir / "logs"
        self.postgres = EmbeddedPostgres(self.root / "postgres", settings=POSTGRES_SETTINGS)
        self.valkey = EmbeddedValkey(self.root / "valkey")
        self.api: ServiceProcess | None = None
        self.worker: ServiceProcess | None = None
        self.env: dict[str, str] = {}

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the servers, migrate, and start the API."""
        from reference_impl.core.migrate import upgrade

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.postgres.ensure_database(DATABASE)
        upgrade(self.database_url)
        self.valkey.start()
        self.env = self._service_env()
        port = find_free_port()
        self.api = ServiceProcess(
            "api",
            ["serve", "--port", str(port), "--workers", str(self.api_workers)],
            self.env,
            self.log_dir,
            port=port,
        )
        self.api.start(timeout=120)
        assert self.api.pid is not None
        wait_until_listening(self.api.pid, port, self.api_workers)

    def start_worker(self) -> None:
        """Start one queue worker (`auditkit worker`)."""
        if self.worker is not None and self.worker.pid is not None:
            return
        self.worker = ServiceProcess(
            "worker", ["worker", "--consumer", "bench"], self.env, self.log_dir
        )
        self.worker.start()

    def stop_worker(self) -> None:
        """Stop the queue worker (SIGTERM: it finishes the batch in hand)."""
        if self.worker is not None:
            self.worker.stop()

    def close(self) -> None:
        """Stop everything this run started and remove the server data."""
        for proc in (self.worker, self.api):
            if proc is not None:
                proc.stop()
        self.valkey.kill()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what phases use -------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        """The benchmark database, as its owner (`postgres`)."""
        return self.postgres.url(DATABASE)

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        assert self.api is not None
        return self.api.url

    async def api_process_of(self, client_port: int) -> int | None:
        """The API process holding the connection from loopback port ``client_port``.

        ``None`` when no process has accepted it within two seconds.
        """
        assert self.api is not None and self.api.pid is not None
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for proc in process_tree(self.api.pid)[1:]:
                if any(c.raddr and c.raddr.port == client_port for c in _tcp(proc)):
                    return proc.pid
            await asyncio.sleep(0.01)
        return None

    def cpu_parts(self) -> dict[str, Callable[[], int | None]]:
        """The processes whose CPU a measurement charges to each part of the stack."""
        return {
            "api": lambda: self.api.pid if self.api else None,
            "postgres": lambda: self.postgres.pid,
            "valkey": lambda: self.valkey.pid,
            "worker": lambda: self.worker.pid if self.worker else None,
        }

    def api_rss(self) -> int:
        """Resident memory of the API (every process of it), in bytes."""
        return _tree_rss(self.api.pid if self.api else None)

    def worker_rss(self) -> int:
        """Resident memory of the queue worker, in bytes."""
        return _tree_rss(self.worker.pid if self.worker else None)

    def settings(self) -> Any:
        """The service's settings, for the harness's own connections (as the owner)."""
        from reference_impl.core.settings import Settings

        values: dict[str, Any] = {
            k.removeprefix("AUDIT_").lower(): v
            for k, v in self.env.items()
            if k.startswith("AUDIT_")
        }
        for name in ("signing_keys", "encrypted_fields"):
            values[name] = json.loads(values[name])
        return Settings(**values)

    async def create_tenants(self, names: list[str], keys_each: int = 1) -> list[TenantKey]:
        """API keys (every tenant role) for tenants ``names``, ``keys_each`` per tenant."""
        from reference_impl.core.db import create_engine
        from reference_impl.security.policy import TENANT_ROLES
        from reference_impl.security.service import ApiKeyService

        settings = self.settings()
        engine = create_engine(settings)
        try:
            pepper = base64.b64decode(settings.api_key_pepper.get_secret_value())
            service = ApiKeyService(engine, pepper)
            out = []
            for name in names:
                for _ in range(keys_each):
                    created = await service.create(name, "benchmark", roles=sorted(TENANT_ROLES))
                    out.append(TenantKey(name, created.key))
            await service.close()
            return out
        finally:
            await engine.dispose()

    def tenants(self, names: list[str], keys_each: int = 1) -> list[TenantKey]:
        """`create_tenants`, from synchronous code."""
        return asyncio.run(self.create_tenants(names, keys_each))

    def _service_env(self) -> dict[str, str]:
        state = self.root / "state"
        values = {
            "PROFILE": "test",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.valkey.url(),
            "SIGNING_KEYS": json.dumps(
                {"bench-1": base64.b64encode(secrets.token_bytes(32)).decode()}
            ),
            "ACTIVE_SIGNING_KEY": "bench-1",
            "API_KEY_PEPPER": _secret(),
            "STATE_DIR": str(state),
            "KEK_FILE": str(self._kek_file(state)),
            "ENCRYPTED_FIELDS": json.dumps(["/session/ip_address"]),
            # The rate limiter runs on every request as in production, but the benchmark
            # measures how fast the service stores events, not the limits a deployment
            # chooses: with the default 5,000 events/s per key, a fast batch phase on few
            # keys (`--quick`: four) was partly refused with 429.
            "RATE_LIMIT_INGEST_KEY": "1000000/second",
            "RATE_LIMIT_INGEST_TENANT": "1000000/second",
            # Scheduled verification would read every chain in the middle of a measurement.
            "VERIFY_INTERVAL_S": "0",
            "CHECKPOINT_INTERVAL_S": "0",
            "EMBEDDED_WORKER": "false",
        }
        values.update(self.extra)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
        env.update({f"AUDIT_{k.upper()}": v for k, v in values.items()})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    @staticmethod
    def _kek_file(state: Path) -> Path:
        from reference_impl.security.encryption import create_key_file

        path = state / "kek.json"
        if not path.exists():
            create_key_file(path, "bench-kek-1")
        return path
