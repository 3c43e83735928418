"""`auditkit keys create|list|revoke|rotate`."""

from __future__ import annotations

import asyncio
import base64
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from reference_impl.core.commands import backends, console, fail, load_settings
from reference_impl.core.db import PLATFORM_SCOPE, create_engine, scoped
from reference_impl.core.settings import Settings
from reference_impl.security.policy import Role
from reference_impl.security.service import ApiKeyService

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help="Create, list, revoke API keys; rotate encryption keys.", no_args_is_help=True
)


def _service(settings: Settings, engine: Any) -> ApiKeyService:
    assert settings.api_key_pepper is not None
    return ApiKeyService(engine, base64.b64decode(settings.api_key_pepper.get_secret_value()))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.")],
    role: Annotated[
        list[Role] | None,
        typer.Option(help="A role of the key (repeat for several). Default: ingest."),
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "api key",
    expires_days: Annotated[int | None, typer.Option(min=1, help="Expire after N days.")] = None,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    settings = load_settings()
    expires = None if expires_days is None else datetime.now(UTC) + timedelta(days=expires_days)
    roles = tuple(role or [Role.ingest])
    with backends(settings) as resolved:
        try:
            created = asyncio.run(_create_key(resolved, tenant, name, roles, expires))
        except ValueError as exc:
            fail(str(exc))
    sys.stdout.write(created + "\n")


async def _create_key(
    settings: Settings, tenant: str, name: str, roles: tuple[Role, ...], expires: datetime | None
) -> str:
    engine = create_engine(settings)
    try:
        created = await _service(settings, engine).create(
            tenant, name, roles=roles, expires_at=expires
        )
        return created.key
    finally:
        await engine.dispose()


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None) -> None:
    """List API keys (prefixes only; secrets are never stored)."""
    settings = load_settings()
    with backends(settings) as resolved:
        rows = asyncio.run(_list_keys(resolved, tenant))
    table = Table("prefix", "tenant", "name", "roles", "created", "expires", "revoked", "last used")
    for r in rows:
        table.add_row(
            r.prefix,
            r.tenant_id,
            r.name,
            ",".join(r.roles),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            "" if r.expires_at is None else f"{r.expires_at:%Y-%m-%d}",
            "" if r.revoked_at is None else f"{r.revoked_at:%Y-%m-%d %H:%M}",
            "" if r.last_used_at is None else f"{r.last_used_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


async def _list_keys(settings: Settings, tenant: str | None) -> list[Any]:
    from reference_impl.security import repository

    engine = create_engine(settings)
    try:
        async with scoped(engine, tenant or PLATFORM_SCOPE) as conn:
            return await repository.list_keys(conn, tenant)
    finally:
        await engine.dispose()


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's public prefix.")]) -> None:
    """Revoke an API key by its prefix."""
    settings = load_settings()
    with backends(settings) as resolved:
        revoked = asyncio.run(_revoke_key(resolved, prefix))
    if not revoked:
        fail(f"no live key with prefix {prefix!r}", 1)
    console.print(f"revoked {prefix}")


async def _revoke_key(settings: Settings, prefix: str) -> bool:
    engine = create_engine(settings)
    try:
        return await _service(settings, engine).revoke(prefix)
    finally:
        await engine.dispose()


# --8<-- [start:rotate]
@keys_app.command("rotate")
def keys_rotate(
    rewrap_only: Annotated[
        bool,
        typer.Option(
            "--rewrap-only", help="Keep the key-encryption keys; re-wrap under the active one."
        ),
    ] = False,
) -> None:
    """Make a new key-encryption key active and re-wrap every data key under it.

    Events are not touched: their ciphertext, hashes and proofs stay as they are. The old
    key-encryption key stays in the key file until every data key is re-wrapped.
    """
    from reference_impl.security.encryption import create_key_file

    settings = load_settings()
    if settings.kek_file is None:
        fail("set AUDIT_KEK_FILE (no key-encryption keys are configured)")
    with backends(settings) as resolved:
        new_id = None if rewrap_only else create_key_file(settings.kek_file)
        done = asyncio.run(_rewrap(resolved))
    if new_id:
        console.print(f"key-encryption key {new_id} is active", highlight=False)
    console.print(f"re-wrapped {done} data key(s); no event was changed", highlight=False)


async def _rewrap(settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from reference_impl.security.encryption import FieldEncryptor, LocalKeyFileProvider

    assert settings.kek_file is not None
    engine = create_engine(settings)
    try:
        encryptor = FieldEncryptor(
            engine, LocalKeyFileProvider(settings.kek_file), settings.encrypted_fields
        )
        with Progress(
            TextColumn("re-wrapping data keys"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            task = progress.add_task("rewrap", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await encryptor.rewrap_all(advance)
    finally:
        await engine.dispose()


# --8<-- [end:rotate]
