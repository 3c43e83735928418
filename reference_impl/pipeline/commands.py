"""`auditkit worker` and `auditkit dlq list|replay|purge`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from reference_impl.core.commands import backends, console, fail, load_settings
from reference_impl.core.errors import AuditError
from reference_impl.core.settings import Settings
from reference_impl.pipeline.dlq import DeadLetter, replay
from reference_impl.pipeline.runner import run_worker, worker_runtime

__all__ = ["dlq_app", "worker"]

dlq_app = typer.Typer(help="Inspect, replay and purge the dead-letter queue.", no_args_is_help=True)


def worker(
    consumer: Annotated[
        str | None, typer.Option(help="Name in the consumer group (default: host-pid).")
    ] = None,
) -> None:
    """Move queued events into PostgreSQL until SIGTERM (the batch in hand is finished)."""
    from reference_impl.observability.logging import configure_logging

    settings = load_settings()
    configure_logging("DEBUG" if settings.debug else "INFO", json=settings.profile.is_strict)
    with backends(settings) as resolved:
        asyncio.run(run_worker(resolved, consumer))


async def _letters(
    settings: Settings, tenant: str | None, entry_id: str | None
) -> list[DeadLetter]:
    async with worker_runtime(settings, consumer="cli") as w:
        tenants = [tenant] if tenant else await w.dlq.tenants()
        out: list[DeadLetter] = []
        for name in tenants:
            if entry_id is not None:
                letter = await w.dlq.get(name, entry_id)
                out.extend([letter] if letter else [])
            else:
                after = "-"
                while batch := await w.dlq.entries(name, after=after, limit=500):
                    out.extend(batch)
                    after = batch[-1].id
        return out


@dlq_app.command("list")
def dlq_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """List dead-lettered events with their error and attempt count."""
    settings = load_settings()
    with backends(settings) as resolved:
        letters = asyncio.run(_letters(resolved, tenant, None))
    table = Table("tenant", "id", "event_id", "reason", "error", "attempts", "last failure")
    for x in letters:
        table.add_row(
            x.tenant, x.id, x.event_id or "", x.reason, x.error_type, str(x.attempts),
            x.last_failure_at[:19],
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(letters)} dead-lettered event(s)", highlight=False)


async def _replay(settings: Settings, letters: list[DeadLetter]) -> list[tuple[DeadLetter, str]]:
    outcomes = []
    async with worker_runtime(settings, consumer="cli") as w:
        for letter in letters:
            try:
                result = await replay(w.dlq, w.ingest, letter)
                outcomes.append((letter, f"stored seq {result.receipt.seq}"))
            except ValueError:
                outcomes.append((letter, "failed: unreadable payload (purge it)"))
            except AuditError as exc:
                outcomes.append((letter, f"failed: {exc.slug}: {exc.detail}"))
    return outcomes


def _selected(
    settings: Settings, tenant: str | None, entry_id: str | None, every: bool
) -> list[DeadLetter]:
    """The entries a replay or purge names: one (`--tenant --id`) or all (`--all`)."""
    if entry_id is None and not every:
        fail("name an entry with --id (and --tenant), or pass --all")
    if entry_id is not None and tenant is None:
        fail("--id needs --tenant")
    letters = asyncio.run(_letters(settings, tenant, entry_id))
    if entry_id is not None and not letters:
        fail(f"no dead-letter entry {entry_id} for tenant {tenant}", 1)
    return letters


@dlq_app.command("replay")
def dlq_replay(
    tenant: Annotated[str | None, typer.Option(help="Tenant of the entries.")] = None,
    entry_id: Annotated[str | None, typer.Option("--id", help="One entry.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every entry (of --tenant, or all).")
    ] = False,
) -> None:
    """Commit dead-lettered events through synchronous ingest; exit 1 if any still fails."""
    settings = load_settings()
    with backends(settings) as resolved:
        outcomes = asyncio.run(_replay(resolved, _selected(resolved, tenant, entry_id, every)))
    for letter, text in outcomes:
        console.print(
            f"{letter.tenant} {letter.id} {letter.event_id or '-'}: {text}", highlight=False
        )
    failed = sum(text.startswith("failed") for _, text in outcomes)
    console.print(f"replayed {len(outcomes) - failed} of {len(outcomes)}", highlight=False)
    raise typer.Exit(1 if failed else 0)


async def _purge(settings: Settings, letters: list[DeadLetter]) -> int:
    async with worker_runtime(settings, consumer="cli") as w:
        return sum([await w.dlq.delete(x.tenant, x.id) for x in letters])


@dlq_app.command("purge")
def dlq_purge(
    tenant: Annotated[str | None, typer.Option(help="Tenant of the entries.")] = None,
    entry_id: Annotated[str | None, typer.Option("--id", help="One entry.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every entry (of --tenant, or all).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead-lettered events for good."""
    settings = load_settings()
    with backends(settings) as resolved:
        letters = _selected(resolved, tenant, entry_id, every)
        if not yes and not typer.confirm(f"purge {len(letters)} dead-lettered event(s)?"):
            raise typer.Exit(1)
        purged = asyncio.run(_purge(resolved, letters))
    console.print(f"purged {purged}", highlight=False)
