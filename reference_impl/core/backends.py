"""Resolve the database and Redis the service runs against, starting embedded ones if needed.

With `AUDIT_DATABASE_URL` and `AUDIT_REDIS_URL` set, those servers are used as they are.
With either unset (dev and test profiles only), an embedded PostgreSQL and an embedded Valkey
are started under the state directory, on ports remembered there, so the next start finds
the same data at the same address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from reference_impl.core.embedded import EmbeddedPostgres, EmbeddedValkey, find_free_port
from reference_impl.core.settings import Settings, SettingsError
from reference_impl.core.state import StateDir

__all__ = ["DATABASE_NAME", "running_backends"]

DATABASE_NAME = "auditkit"


@contextmanager
def running_backends(settings: Settings) -> Iterator[Settings]:
    """Settings with both backend URLs set, embedded servers running while the block runs."""
    if not settings.uses_embedded_servers:
        yield settings
        return
    if settings.profile.is_strict:
        raise SettingsError(f"profile {settings.profile.value} refuses embedded servers")
    state = StateDir(settings.state_dir)
    ports = state.ports()
    update: dict[str, Any] = {}
    with ExitStack() as stack:
        if settings.database_url is None:
            ports.setdefault("postgres", find_free_port())
            pg = EmbeddedPostgres(state.pgdata, port=ports["postgres"])
            if not pg.answers():  # another `auditkit` command may already run it
                pg.start()
                stack.callback(pg.stop)
            pg.ensure_database(DATABASE_NAME)
            update["database_url"] = pg.url(DATABASE_NAME)
        if settings.redis_url is None:
            ports.setdefault("valkey", find_free_port())
            valkey = EmbeddedValkey(state.valkey_dir, port=ports["valkey"])
            if not valkey.answers():
                valkey.start()
                stack.callback(valkey.stop)
            update["redis_url"] = valkey.url()
        state.save_ports(ports)
        yield settings.model_copy(update={k: _secret(v) for k, v in update.items()})


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
