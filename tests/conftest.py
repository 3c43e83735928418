"""Suite-wide fixtures: real servers, a migrated database, the app, fresh tenants."""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from reference_impl.api.app import create_app
from reference_impl.core.migrate import upgrade
from reference_impl.core.settings import Settings
from tests.support.backends import Backends, start_backends

TEST_KEYS = {
    "test-2025": base64.b64encode(b"k" * 32).decode(),
    "test-2026": base64.b64encode(b"n" * 32).decode(),
}
TEST_PEPPER = base64.b64encode(b"p" * 32).decode()
TEST_CHECKPOINT_KEYS = {
    "test-ckpt-2025": base64.b64encode(b"c" * 32).decode(),
    "test-ckpt-2026": base64.b64encode(b"d" * 32).decode(),
}


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    """PostgreSQL and Redis/Valkey for the whole session.

    Their data lives outside pytest's temporary tree: pytest keeps that tree private to
    root (mode 0700), and PostgreSQL runs as an unprivileged user that must reach its files.
    """
    root = Path(tempfile.mkdtemp(prefix="auditkit-test-"))
    try:
        with start_backends(root) as found:
            yield found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def database_url(backends: Backends) -> str:
    """A fresh database for this session, migrated to head."""
    import asyncio

    name = f"auditkit_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(backends.postgres_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    url = _with_database(backends.postgres_url, name)
    upgrade(url)
    return url


def _kek_file(state_dir: Path) -> Path:
    from reference_impl.security.encryption import create_key_file

    path = state_dir / "kek.json"
    if not path.exists():
        create_key_file(path, "test-kek-1")
    return path


def make_settings(
    database_url: str, redis_url: str, state_dir: Path, **overrides: object
) -> Settings:
    """Test-profile settings with fixed keys (the active ones are `test-2026` and
    `test-ckpt-2026`)."""
    values: dict[str, object] = {
        "profile": "test",
        "database_url": database_url,
        "redis_url": redis_url,
        "signing_keys": TEST_KEYS,
        "active_signing_key": "test-2026",
        "api_key_pepper": TEST_PEPPER,
        "checkpoint_keys": TEST_CHECKPOINT_KEYS,
        "active_checkpoint_key": "test-ckpt-2026",
        "state_dir": state_dir,
        "api_key_cache_seconds": 0,
        "worker_block_ms": 200,
        "kek_file": _kek_file(state_dir),
        # Access records would mix into every query test's results; the security suite
        # turns them on and checks them.
        "record_access": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(
    database_url: str, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings of the suite's app."""
    return make_settings(database_url, backends.redis_url, tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    """The app with its lifespan running (engine, Redis, committers)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the app in process."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://auditkit.test") as c:
        yield c


@dataclass(frozen=True)
class Tenant:
    """A tenant made for one test, with an API key."""

    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for this tenant."""
        return {"Authorization": f"Bearer {self.key}"}


async def new_tenant(
    app: object,
    prefix: str = "t",
    roles: tuple[str, ...] = ("ingest", "reader", "auditor", "admin"),
) -> Tenant:
    """A fresh tenant and key: tests isolate by tenant, so no cleanup is needed."""
    name = f"{prefix}-{secrets.token_hex(5)}"
    created = await app.state.api_keys.create(  # type: ignore[attr-defined]
        name, "test key", roles=roles
    )
    return Tenant(name, created.key)


@pytest.fixture
async def tenant(app: object) -> Tenant:
    """A fresh tenant for this test."""
    return await new_tenant(app)


@pytest.fixture
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection, for tampering the way an attacker with DB access would."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()
