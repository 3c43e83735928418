"""The servers and processes one drill owns, all recorded under its run directory.

A drill starts its own PostgreSQL, Valkey and (for one drill) PgBouncer on free loopback
ports, migrates the database, creates a few tenants with API keys, and runs the service as
real processes: `auditkit serve` (one or two) and `auditkit worker` (one or two). Nothing
here touches a server it did not start.

Chaos Toolkit runs every activity of an experiment in one Python process, so the live
`Stack` is kept in a registry keyed by its run directory, where later actions find it. The
run directory also holds `state.json` (ports, process ids and their start times), so a
different process can still stop everything a crashed run left behind, and only that.

Files of a run directory:

| file | written by | holds |
|---|---|---|
| `state.json` | the harness | ports, pids, the service environment, tenants and keys |
| `marks.ndjson` | actions | timeline marks: stack up, fault start and end, load stop |
| `history.ndjson` | the load generator | every attempt and every acknowledged receipt |
| `check.json` | the checker probe | the verdict of the history check |
| `logs/` | every process | server, API, worker and load generator logs |
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import redis

from reference_impl.core.embedded import (
    EmbeddedPostgres,
    EmbeddedValkey,
    ServerProcess,
    ServerStartError,
    postgres_bin_dir,
)

__all__ = [
    "DATABASE",
    "REPO_ROOT",
    "DrillError",
    "DrillInterrupted",
    "PgBouncer",
    "ServiceProcess",
    "Stack",
    "StackSpec",
    "TenantKey",
    "append_line",
    "get_stack",
    "mark",
    "read_lines",
    "stop_run",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASE = "auditkit"
_PG_RUN_USER = "embedded_postgres"  # PostgreSQL and PgBouncer both refuse to run as root


class DrillError(RuntimeError):
    """The drill could not drive what it owns; the message says what."""


class DrillInterrupted(DrillError):
    """The drill cannot go on: its servers did not start, no stack runs, the fault could not
    be injected. Actions raise it after asking the Chaos Toolkit to stop the run (which then
    plays the rollbacks)."""


# ----------------------------------------------------------------------------- run files


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line (each line is written whole, then flushed)."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (none if it does not exist).

    A line cut short by a killed writer is skipped: it was never a complete record.
    """
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def mark(run_dir: Path, name: str, **details: Any) -> float:
    """Record a timeline mark (`fault_start`, `fault_end`, ...) and return its time."""
    now = time.time()
    append_line(Path(run_dir) / "marks.ndjson", {"t": now, "mark": name, **details})
    return now


# ----------------------------------------------------------------------------- PgBouncer


def pgbouncer_binary() -> Path:
    """Debian's `pgbouncer` (on PATH, or in /usr/sbin)."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )
    if found is None:
        raise ServerStartError("no pgbouncer binary: apt-get install pgbouncer")
    return Path(found)


class PgBouncer(ServerProcess):
    """A PgBouncer in front of one PostgreSQL database, with its admin console.

    Args:
        data_dir: Where its configuration lives.
        upstream_port: The PostgreSQL server's port (on the same host).
        pool_mode: `session` or `transaction`.
        port: TCP port; a free one when omitted.
        role: Role each server connection sets (`SET ROLE`), as the service does at connect.
    """

    name = "pgbouncer"

    def __init__(
        self,
        data_dir: Path,
        upstream_port: int,
        pool_mode: str = "session",
        port: int | None = None,
        host: str = "127.0.0.1",
        role: str | None = None,
    ) -> None:
        super().__init__(data_dir, port, host)
        self.upstream_port = upstream_port
        self.role = role
        self.pool_mode = pool_mode
        self.binary = pgbouncer_binary()

    def url(self, database: str = DATABASE, **query: str) -> str:
        """A libpq-style URL for a database behind this PgBouncer."""
        suffix = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@{self.host}:{self.port}/{database}" + (
            f"?{suffix}" if suffix else ""
        )

    def _run_user(self) -> str | None:
        return _PG_RUN_USER if os.geteuid() == 0 else None

    def _initialise(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ini = self.data_dir / "pgbouncer.ini"
        # --8<-- [start:pgbouncer-ini]
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.data_dir / "userlist.txt"),
            "admin_users": "postgres",
            "pool_mode": self.pool_mode,
            "max_client_conn": "400",
            "default_pool_size": "40",
            # asyncpg sends these as startup parameters, which PgBouncer would refuse: the
            # role is set once per server connection below, the timeout on the role itself.
            "ignore_startup_parameters": "statement_timeout,extra_float_digits,role",
            # DISCARD ALL would also reset the role; the service leaves no session state.
            "server_reset_query": "",
            "server_connect_timeout": "5",
            "query_wait_timeout": "30",
        }
        # --8<-- [end:pgbouncer-ini]
        lines = [
            "[databases]",
            f"{DATABASE} = host={self.host} port={self.upstream_port} dbname={DATABASE}"
            + (f" connect_query='SET ROLE {self.role}'" if self.role else ""),
            "[pgbouncer]",
            *(f"{k} = {v}" for k, v in settings.items()),
        ]
        ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.data_dir / "userlist.txt").write_text('"postgres" ""\n', encoding="utf-8")
        user = self._run_user()
        if user is not None:
            for path in (self.data_dir, ini, self.data_dir / "userlist.txt"):
                shutil.chown(path, user, user)

    def _command(self) -> list[str]:
        return [str(self.binary), str(self.data_dir / "pgbouncer.ini")]

    def _admin_command(self, command: str) -> list[str]:
        return [
            str(postgres_bin_dir() / "psql"),
            *("-X", "-A", "-t", "-h", self.host, "-p", str(self.port)),
            *("-U", "postgres", "-d", "pgbouncer", "-c", command),
        ]

    def admin_async(self, command: str) -> subprocess.Popen[bytes]:
        """Send an admin command that may wait (PAUSE) without waiting for it."""
        return subprocess.Popen(
            self._admin_command(command),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def admin(self, command: str, timeout: float = 10.0) -> str:
        """Run one command on the admin console (`PAUSE auditkit`, `RESUME`, `SHOW POOLS`)."""
        done = subprocess.run(
            self._admin_command(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise DrillError(f"pgbouncer admin {command!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()


# ------------------------------------------------------------------ the service's processes


def _tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class ServiceProcess:
    """One `auditkit serve` or `auditkit worker` process, restartable with the same identity.

    Args:
        name: `api-0`, `worker-1`, ... (also the log file's name).
        args: Arguments after `auditkit`.
        env: The process environment (the service's `AUDIT_*` settings).
        log_dir: Where `<name>.log` is appended to, across restarts.
        port: For an API process, the port it serves on (kept across restarts).
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        """Base URL of an API process."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the process; for an API, wait until `/health/ready` answers 200."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reference_impl", *self.args],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for the drill runner is not ours
            )
        self.started_at = time.time()
        if self.port is not None:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Poll readiness until 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise DrillError(f"{self.name} exited at start: {_tail(self.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DrillError(f"{self.name} not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash of its host would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful: in-flight requests or the batch in hand finish), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def record(self) -> dict[str, Any]:
        """What `state.json` keeps of this process."""
        return {"name": self.name, "port": self.port, **_identity(self.pid)}


def _identity(pid: int | None) -> dict[str, Any]:
    """A pid with its start time, so a later cleanup never signals a reused pid."""
    if pid is None:
        return {"pid": None, "create_time": None}
    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.NoSuchProcess:
        return {"pid": None, "create_time": None}


# ---------------------------------------------------------------------------------- stack


@dataclass(frozen=True)
class TenantKey:
    """A tenant of the drill and its API key."""

    name: str
    key: str


@dataclass(frozen=True)
class StackSpec:
    """What a drill runs.

    Attributes:
        apis: API processes (`auditkit serve`).
        workers: Queue workers (`auditkit worker`), named `drill-w0`, `drill-w1`, ...
        pgbouncer: None, or the PgBouncer pool mode between the service and PostgreSQL.
        tenants: Tenants the load spreads over (each has its own chain).
        settings: Extra `AUDIT_*` settings of the service (name without the prefix).
    """

    apis: int = 1
    workers: int = 1
    pgbouncer: str | None = None
    tenants: int = 3
    settings: Mapping[str, str] | None = None


_STACKS: dict[str, Stack] = {}


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def get_stack(run_dir: Path) -> Stack:
    """The stack this process started for ``run_dir``.

    Raises:
        DrillError: no stack of this process runs there.
    """
    stack = _STACKS.get(_key(run_dir))
    if stack is None:
        raise DrillInterrupted(f"no drill stack is running for {run_dir} in this process")
    return stack


class Stack:
    """PostgreSQL, Valkey, optional PgBouncer, API processes and workers of one drill run."""

    def __init__(self, run_dir: Path, spec: StackSpec) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.spec = spec
        # Server data lives outside the run directory: PostgreSQL runs as another user and
        # must reach its files, which a private (0700) test directory would forbid.
        self.root = Path(tempfile.mkdtemp(prefix="auditkit-drill-"))
        self.log_dir = self.run_dir / "logs"
        self.postgres = EmbeddedPostgres(
            self.root / "postgres", settings={"max_connections": "300"}
        )
        self.valkey = EmbeddedValkey(self.root / "valkey")
        self.pgbouncer: PgBouncer | None = None
        self.apis: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.tenants: list[TenantKey] = []
        self.env: dict[str, str] = {}
        self.load: subprocess.Popen[bytes] | None = None
        self.stopped = False

    # -- start --------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything, in dependency order; record it in `state.json`."""
        from reference_impl.core.migrate import upgrade

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        _STACKS[_key(self.run_dir)] = self
        self.save()
        self.postgres.start()
        self.postgres.ensure_database(DATABASE)
        upgrade(self.postgres.url(DATABASE))
        self.valkey.start()
        database_url = self.postgres.url(DATABASE)
        if self.spec.pgbouncer is not None:
            self.pgbouncer = PgBouncer(
                self.root / "pgbouncer",
                self.postgres.port,
                pool_mode=self.spec.pgbouncer,
                role=self._database_role(),
            )
            self.pgbouncer.start()
            database_url = self.pgbouncer.url(DATABASE)
        self.env = self._service_env(database_url)
        self.tenants = asyncio.run(self._create_tenants(self.spec.tenants))
        self.save()
        for i in range(self.spec.workers):
            worker = ServiceProcess(
                f"worker-{i}", ["worker", "--consumer", f"drill-w{i}"], self.env, self.log_dir
            )
            self.workers.append(worker)
            worker.start()
        for i in range(self.spec.apis):
            port = _free_port()
            api = ServiceProcess(f"api-{i}", ["serve", "--port", str(port)], self.env, self.log_dir)
            api.port = port
            self.apis.append(api)
            api.start()
        self.save()

    def _service_env(self, database_url: str) -> dict[str, str]:
        signing = base64.b64encode(secrets.token_bytes(32)).decode()
        values = {
            # The test profile: servers and secrets are the drill's own, given explicitly.
            "PROFILE": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": self.valkey.url(),
            "SIGNING_KEYS": json.dumps({"drill-1": signing}),
            "ACTIVE_SIGNING_KEY": "drill-1",
            "API_KEY_PEPPER": base64.b64encode(secrets.token_bytes(32)).decode(),
            "STATE_DIR": str(self.root / "state"),
        }
        values.update(self.spec.settings or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
        env.update({f"AUDIT_{k.upper()}": v for k, v in values.items()})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def _database_role(self) -> str | None:
        from reference_impl.core.settings import Settings

        given = (self.spec.settings or {}).get("database_role")
        role = given if given is not None else Settings.model_fields["database_role"].default
        return str(role) if role else None

    def settings(self) -> Any:
        """The service's settings as `reference_impl` reads them, pointing at PostgreSQL itself
        (not through PgBouncer), for the harness's own connections."""
        from reference_impl.core.settings import Settings

        values: dict[str, Any] = {
            k.removeprefix("AUDIT_").lower(): v
            for k, v in self.env.items()
            if k.startswith("AUDIT_")
        }
        values["signing_keys"] = json.loads(values["signing_keys"])
        values["database_url"] = self.postgres.url(DATABASE)
        return Settings(**values)

    async def _create_tenants(self, count: int) -> list[TenantKey]:
        from reference_impl.core.db import create_engine
        from reference_impl.security.service import ApiKeyService

        settings = self.settings()
        engine = create_engine(settings)
        try:
            pepper = base64.b64decode(settings.api_key_pepper.get_secret_value())
            service = ApiKeyService(engine, pepper)
            out = []
            for i in range(count):
                name = f"drill-{i}-{secrets.token_hex(3)}"
                created = await service.create(name, "chaos drill")
                out.append(TenantKey(name, created.key))
            return out
        finally:
            await engine.dispose()

    # -- what drills use ------------------------------------------------------------------
    def api_urls(self) -> list[str]:
        """Base URLs of the API processes."""
        return [api.url for api in self.apis]

    def redis_client(self) -> redis.Redis:
        """A client of the drill's Valkey with short timeouts."""
        return redis.Redis.from_url(self.valkey.url(), socket_timeout=2, socket_connect_timeout=2)

    def streams(self) -> list[str]:
        """Names of the ingest streams, as the service names them."""
        from reference_impl.pipeline.queue import IngestQueue

        shards = int(self.env.get("AUDIT_QUEUE_SHARDS", "1"))
        return IngestQueue(cast(Any, None), shards=shards).streams

    def queue_depth(self) -> int:
        """Entries in the ingest streams not yet acknowledged and deleted."""
        client = self.redis_client()
        try:
            return sum(int(client.xlen(s)) for s in self.streams())
        finally:
            client.close()

    def pending_of(self, consumer: str) -> int:
        """Entries delivered to ``consumer`` and not acknowledged yet."""
        from reference_impl.pipeline.queue import GROUP

        client = self.redis_client()
        total = 0
        try:
            for stream in self.streams():
                with contextlib.suppress(redis.ResponseError):
                    info: Any = client.xpending(stream, GROUP)
                    for row in info.get("consumers") or []:
                        name = row["name"]
                        if (name.decode() if isinstance(name, bytes) else name) == consumer:
                            total += int(row["pending"])
        finally:
            client.close()
        return total

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query run on PostgreSQL itself (tab-separated `psql` output, split)."""
        done = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                *("-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1"),
                *("-h", self.postgres.host, "-p", str(self.postgres.port)),
                *("-U", "postgres", "-d", DATABASE),
            ],
            input=query,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise DrillError(f"query failed: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def start_load(self, config: Mapping[str, Any]) -> None:
        """Start the load generator (`python -m chaos.load RUN_DIR`) with ``config``."""
        (self.run_dir / "load.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        with (self.log_dir / "load.log").open("ab") as log:
            self.load = subprocess.Popen(
                [sys.executable, "-m", "chaos.load", str(self.run_dir)],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.save()

    def save(self) -> None:
        """Write `state.json`."""
        state = {
            "root": str(self.root),
            "stopped": self.stopped,
            "postgres": {"port": self.postgres.port, **_identity(self.postgres.pid)},
            "valkey": {"port": self.valkey.port, **_identity(self.valkey.pid)},
            "pgbouncer": None
            if self.pgbouncer is None
            else {"port": self.pgbouncer.port, **_identity(self.pgbouncer.pid)},
            "apis": [api.record() for api in self.apis],
            "workers": [w.record() for w in self.workers],
            "load": _identity(self.load.pid if self.load and self.load.poll() is None else None),
            "tenants": [{"name": t.name, "key": t.key} for t in self.tenants],
            "env": {k: v for k, v in self.env.items() if k.startswith("AUDIT_")},
        }
        path = self.run_dir / "state.json"
        path.write_text(json.dumps(state, indent=2), encoding="utf-8")

    # -- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything (also what is paused), keep the logs, remove the server data."""
        if self.stopped:
            return
        try:
            if self.load is not None and self.load.poll() is None:
                self.load.send_signal(signal.SIGTERM)
                try:
                    self.load.wait(15)
                except subprocess.TimeoutExpired:
                    self.load.kill()
            for proc in [*self.apis, *self.workers]:
                with contextlib.suppress(Exception):
                    proc.stop(timeout=10)
            servers: list[ServerProcess] = [self.postgres, self.valkey]
            if self.pgbouncer is not None:
                servers.insert(0, self.pgbouncer)
            for server in servers:
                with contextlib.suppress(Exception):
                    server.resume()
                    server.stop(timeout=20)
            for server in servers:
                if server.log_path.exists():
                    shutil.copy(server.log_path, self.log_dir / f"{server.name}.log")
        finally:
            self.stopped = True
            with contextlib.suppress(OSError, ValueError):
                # Keep the recorded pids: they say what ran, and that it is gone now.
                path = self.run_dir / "state.json"
                state = json.loads(path.read_text(encoding="utf-8"))
                state["stopped"] = True
                path.write_text(json.dumps(state, indent=2), encoding="utf-8")
            shutil.rmtree(self.root, ignore_errors=True)
            _STACKS.pop(_key(self.run_dir), None)


def _free_port() -> int:
    from reference_impl.core.embedded import find_free_port

    return find_free_port()


def _recorded(state: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for name in ("load", "postgres", "valkey", "pgbouncer"):
        if isinstance(state.get(name), Mapping):
            yield state[name]
    for name in ("apis", "workers"):
        yield from state.get(name) or []


def stop_run(run_dir: Path) -> None:
    """Stop what a run started: through its live stack in this process, or else by the
    process ids in its `state.json` (only processes whose start time matches)."""
    stack = _STACKS.get(_key(run_dir))
    if stack is not None:
        stack.stop()
        return
    path = Path(run_dir) / "state.json"
    if not path.exists():
        return
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("stopped"):
        return
    for entry in _recorded(state):
        pid, created = entry.get("pid"), entry.get("create_time")
        if pid is None:
            continue
        try:
            proc = psutil.Process(int(pid))
            if created is None or abs(proc.create_time() - float(created)) > 0.01:
                continue  # the pid was reused by a process that is not ours
            tree = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGCONT)
                member.kill()
        psutil.wait_procs(tree, timeout=10)
    shutil.rmtree(state["root"], ignore_errors=True)
    state["stopped"] = True
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")
