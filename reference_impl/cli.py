"""The `auditkit` command: serve, worker, migrate, verify, integrity, keys, dlq, psql."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from reference_impl.bench import commands as bench_commands
from reference_impl.core.commands import (
    backends,
    console,
    database_url,
    err_console,
    fail,
    load_settings,
)
from reference_impl.core.db import PLATFORM_SCOPE, create_engine, scoped
from reference_impl.core.settings import Settings
from reference_impl.core.state import StateDir
from reference_impl.drills import commands as drill_commands
from reference_impl.pipeline import commands as pipeline_commands
from reference_impl.security import commands as security_commands
from reference_impl.transparency import commands as transparency_commands

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncEngine

    from reference_impl.events.monitoring import IntegrityMonitor

__all__ = ["app", "main", "worker_app"]

app = typer.Typer(
    help="auditkit: a tamper-evident audit log service for healthcare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(security_commands.keys_app, name="keys")
integrity_app = typer.Typer(help="Compromised logs: status and clearing.", no_args_is_help=True)
app.add_typer(integrity_app, name="integrity")
app.command("worker")(pipeline_commands.worker)
app.add_typer(pipeline_commands.dlq_app, name="dlq")
app.add_typer(drill_commands.drill_app, name="drill")
app.command("export")(transparency_commands.export)
app.command("verify-bundle")(transparency_commands.verify_bundle_command)
app.add_typer(transparency_commands.log_app, name="log")
app.command("bench")(bench_commands.bench)

DEV_TENANT = "dev"

# --------------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes sharing the port (one per core is a good start).",
        ),
    ] = 1,
) -> None:
    """Run the API. Without AUDIT_DATABASE_URL / AUDIT_REDIS_URL, on embedded servers."""
    import os

    import uvicorn

    from reference_impl.api import serving
    from reference_impl.api.app import create_app
    from reference_impl.core.migrate import is_current, upgrade
    from reference_impl.observability.logging import configure_logging

    settings = load_settings(host=host, port=port)
    configure_logging("DEBUG" if settings.debug else "INFO", json=settings.profile.is_strict)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again; turning that into a
    # clean exit lets the embedded servers below shut down too, and exit with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    with backends(settings) as resolved:
        if resolved.auto_migrate:
            upgrade(database_url(resolved))
        elif not is_current(database_url(resolved)):
            fail("the database schema is not current: run `auditkit migrate` first")
        dev_key = None if resolved.profile.is_strict else asyncio.run(_dev_api_key(resolved))
        _banner(resolved, dev_key)
        options = serving.server_options(
            resolved.host, resolved.port, keep_alive_s=resolved.http_keep_alive_s
        )
        if workers == 1:
            uvicorn.run(create_app(resolved), **options)
            return
        # Each worker process builds its own app from the environment; the servers this
        # process resolved (embedded ones included) are handed down as URLs, and secrets
        # generated in the state directory are read from there again.
        for name in ("database_url", "redis_url"):
            value = getattr(resolved, name)
            assert value is not None
            os.environ[f"AUDIT_{name.upper()}"] = value.get_secret_value()
        try:
            status = serving.run(
                "reference_impl.cli:worker_app", {**options, "factory": True}, workers
            )
        except OSError as exc:
            fail(f"cannot listen on {resolved.host}:{resolved.port}: {exc.strerror or exc}")
        if status:
            fail("an API process failed to start; see its log above")


def worker_app() -> FastAPI:
    """The app of one process of `serve --workers N`, from the environment it inherited."""
    from reference_impl.api.app import create_app
    from reference_impl.observability.logging import configure_logging

    settings = load_settings()
    configure_logging("DEBUG" if settings.debug else "INFO", json=settings.profile.is_strict)
    return create_app(settings)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _dev_api_key(settings: Settings) -> str:
    """The development key kept in the state directory, created (again) when needed."""
    from reference_impl.core.errors import UnauthorizedError
    from reference_impl.security.policy import TENANT_ROLES
    from reference_impl.security.service import ApiKeyService

    assert settings.api_key_pepper is not None
    state = StateDir(settings.state_dir)
    engine = create_engine(settings)
    try:
        service = ApiKeyService(
            engine, base64.b64decode(settings.api_key_pepper.get_secret_value())
        )
        key = state.dev_api_key()
        if key is not None:
            try:
                if (await service.authenticate(key)).roles == TENANT_ROLES:
                    return key
            except UnauthorizedError:
                pass
        created = await service.create(
            DEV_TENANT, "development key (printed by serve)", roles=sorted(TENANT_ROLES)
        )
        state.save_dev_api_key(created.key, DEV_TENANT)
        return created.key
    finally:
        await engine.dispose()


def example_event() -> dict[str, Any]:
    """A valid event for the printed `curl` example."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "action": "fhir.patient.read",
        "category": "data_access",
        "fhir_action": "R",
        "outcome": "success",
        "principal": {"id": "dr.alice", "type": "user", "roles": ["physician"]},
        "target": {"resource_type": "Patient", "resource_id": "pat-123", "subject_id": "pat-123"},
        "data_classification": "PHI",
        "purpose_of_use": "TREAT",
    }


def _banner(settings: Settings, dev_key: str | None) -> None:
    base = settings.base_url
    console.print(
        f"[bold green]auditkit[/] serving on [link]{base}[/]  (profile {settings.profile.value})"
    )
    console.print(f"  API docs     {base}/docs")
    console.print(f"  readiness    {base}/health/ready")
    if dev_key is not None:
        body = json.dumps(example_event(), separators=(",", ":"))
        console.print(f"  dev API key  {dev_key}  (tenant {DEV_TENANT!r})")
        console.print("\nSend an event:\n", highlight=False)
        console.print(
            f"curl -sS -X POST {base}/v1/events -H 'Authorization: Bearer {dev_key}'"
            f" -H 'Content-Type: application/json' -d '{body}'",
            highlight=False,
            soft_wrap=True,
        )
    console.print("\nPress Ctrl-C to stop.", highlight=False)


# ------------------------------------------------------------------------------- migrate


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads",
) -> None:
    """Apply the database migrations (the only way they run in staging, prod and dr)."""
    from reference_impl.core.migrate import current_revisions_sync, upgrade

    settings = load_settings()
    with backends(settings) as resolved:
        try:
            upgrade(database_url(resolved), revision)
        except Exception as exc:
            fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", 1)
        revisions = ", ".join(sorted(current_revisions_sync(database_url(resolved))))
        console.print(f"database at revision {revisions}")


# -------------------------------------------------------------------------------- verify


@app.command()
def verify(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Verify hash chains and signatures. Exit 0 when every chain is intact, 1 otherwise."""
    settings = load_settings()
    with backends(settings) as resolved:
        results = asyncio.run(_verify(resolved, tenant, quiet=as_json))
    if as_json:
        console.print_json(json.dumps(results))
    else:
        _print_verification(results)
    raise typer.Exit(0 if all(r["valid"] for r in results) else 1)


async def _verify(settings: Settings, only: str | None, *, quiet: bool) -> list[dict[str, Any]]:
    from reference_impl.events import repository

    engine = create_engine(settings)
    monitor = _monitor(settings, engine)
    results = []
    try:
        async with scoped(engine, PLATFORM_SCOPE) as conn:
            tenants = [only] if only else await repository.list_tenants(conn)
            totals = {t: await repository.count_events(conn, t) for t in tenants}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=quiet,
        ) as progress:
            for name in tenants:
                task = progress.add_task(f"verifying {name}", total=totals[name])

                def advance(done: int, task: TaskID = task) -> None:
                    progress.update(task, completed=done)

                outcome = await monitor.check(name, progress=advance)
                progress.update(task, completed=totals[name])
                results.append(outcome.as_dict())
    finally:
        await engine.dispose()
    return results


def _monitor(settings: Settings, engine: AsyncEngine) -> IntegrityMonitor:
    from reference_impl.events.monitoring import IntegrityMonitor
    from reference_impl.integrity import KeyRing
    from reference_impl.observability.alerts import Alerter

    assert settings.active_signing_key is not None
    keyring = KeyRing(settings.signing_secrets, settings.active_signing_key)
    return IntegrityMonitor(engine, keyring, Alerter(settings.alert_webhook_url))


@integrity_app.command("status")
def integrity_status() -> None:
    """List tenants whose log is marked compromised (exit 1 if any)."""
    settings = load_settings()
    with backends(settings) as resolved:
        marks = asyncio.run(_compromised(resolved))
    table = Table("tenant", "since", "first broken seq", "kind")
    for m in marks:
        table.add_row(m["tenant"], m["since"][:19], str(m["seq"]), m["kind"] or "")
    console.print(table)
    console.print(f"{len(marks)} compromised tenant(s)", highlight=False)
    raise typer.Exit(1 if marks else 0)


async def _compromised(settings: Settings) -> list[dict[str, Any]]:
    engine = create_engine(settings)
    try:
        return await _monitor(settings, engine).compromised()
    finally:
        await engine.dispose()


@integrity_app.command("clear")
def integrity_clear(
    tenant: Annotated[str, typer.Option(help="The tenant whose mark to lift.")],
) -> None:
    """Re-verify a tenant and lift its compromised mark, only if its chain is whole now."""
    settings = load_settings()
    with backends(settings) as resolved:
        result = asyncio.run(_clear(resolved, tenant))
    if not result["valid"]:
        fail(f"{tenant} still fails verification at seq {result['first_broken_seq']}", 1)
    console.print(f"{tenant}: verified {result['checked']} events; mark cleared", highlight=False)


async def _clear(settings: Settings, tenant: str) -> dict[str, Any]:
    engine = create_engine(settings)
    try:
        return (await _monitor(settings, engine).clear(tenant)).as_dict()
    finally:
        await engine.dispose()


def _print_verification(results: list[dict[str, Any]]) -> None:
    table = Table("tenant", "verified", "result", "first broken seq", "kind")
    for r in results:
        ok = "[green]valid[/]" if r["valid"] else "[bold red]TAMPERED[/]"
        broken = "" if r["first_broken_seq"] is None else str(r["first_broken_seq"])
        table.add_row(r["tenant"], str(r["checked"]), ok, broken, r["kind"] or "")
    console.print(table)
    for r in results:
        if not r["valid"]:
            console.print(f"[red]{r['tenant']}:[/] {r['detail']}", highlight=False)
    if not results:
        console.print("no tenants yet")


# ---------------------------------------------------------------------------------- psql


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context) -> None:
    """Open `psql` on the configured database (extra arguments go to psql)."""
    import os

    from reference_impl.core.embedded import postgres_bin_dir

    settings = load_settings()
    with backends(settings) as resolved:
        url = database_url(resolved).replace("postgresql+asyncpg://", "postgresql://")
        command = [str(postgres_bin_dir() / "psql"), "-X", url, *ctx.args]
        done = subprocess.run(
            command, check=False, env={**os.environ, "PGAPPNAME": "auditkit-psql"}
        )
    raise typer.Exit(done.returncode)


# ------------------------------------------------------------------------------ playbook


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def playbook(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="`list`, or `run`.")],
    name: Annotated[str | None, typer.Argument(help="The playbook (see `list`).")] = None,
) -> None:
    """List the runnable playbooks, or run one: `auditkit playbook run NAME [ARGS]`."""
    import importlib
    import pkgutil

    try:
        package = importlib.import_module("playbooks")
    except ImportError:
        fail("the playbooks/ folder is not importable from here (run from the repository)")
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    if action == "list":
        for found in names:
            doc = (importlib.import_module(f"playbooks.{found}").__doc__ or "").splitlines()
            console.print(f"{found:<20} {doc[0] if doc else ''}", highlight=False)
        return
    if action != "run" or name is None:
        fail("use `auditkit playbook list` or `auditkit playbook run NAME [ARGS]`")
    module_name = name.replace("-", "_")
    if module_name not in names:
        fail(f"no playbook {name!r}: {', '.join(names)}")
    module = importlib.import_module(f"playbooks.{module_name}")
    raise typer.Exit(module.main(list(ctx.args)))


def main() -> None:
    """Console-script entry point."""
    app()
