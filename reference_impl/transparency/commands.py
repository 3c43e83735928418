"""`auditkit export`, `auditkit verify-bundle` and `auditkit log ...`.

`verify-bundle` needs nothing but `reference_impl.integrity` and the bundle: no settings,
no database, no network. It is what an auditor runs on a bundle they were handed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reference_impl.core.commands import backends, console, err_console, fail, load_settings
from reference_impl.core.settings import Settings
from reference_impl.integrity.bundle import BundleError, BundleEvent, BundleWriter, verify_bundle
from reference_impl.integrity.checkpoint import NoteError, NoteVerifier

__all__ = ["export", "log_app", "verify_bundle_command"]

log_app = typer.Typer(
    help="The verifiable log: checkpoints, tree audits, witnesses.", no_args_is_help=True
)

EXPORT_BATCH = 512


def _progress(*, quiet: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )


def _instant(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        fail(f"{option} is not an RFC 3339 time: {value!r}")
    if parsed.tzinfo is None:
        fail(f"{option} needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return parsed


# ------------------------------------------------------------------------------- export


# --8<-- [start:export]
def export(
    tenant: Annotated[str, typer.Option(help="The tenant whose events to export.")],
    start: Annotated[
        str, typer.Option("--from", help="First instant (RFC 3339), by recorded_at, inclusive.")
    ],
    end: Annotated[
        str, typer.Option("--to", help="Last instant (RFC 3339), by recorded_at, exclusive.")
    ],
    out: Annotated[Path, typer.Option(help="The bundle directory to create (must not exist).")],
) -> None:
    """Write an offline-verifiable bundle of a tenant's events recorded in [--from, --to).

    The bundle holds the events (canonical bytes and chain fields), a signed checkpoint
    that covers them (the latest one, or a new one issued now), an inclusion proof of each
    event against it, and the log's public keys. Check it with `auditkit verify-bundle`.
    """
    first, last = _instant(start, "--from"), _instant(end, "--to")
    if first >= last:
        fail("--from must be before --to")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} exists and is not an empty directory")
    settings = load_settings()
    with backends(settings) as resolved:
        summary = asyncio.run(_export(resolved, tenant, first, last, out))
    console.print(
        f"exported {summary['events']} events (seq {summary['first_seq']}..{summary['last_seq']})"
        f" of {summary['origin']} to {out}",
        highlight=False,
    )
    console.print(
        f"checkpoint: tree size {summary['tree_size']}, root {summary['root_hash']}",
        highlight=False,
    )


# --8<-- [end:export]


async def _export(
    settings: Settings, tenant: str, start: datetime, end: datetime, out: Path
) -> dict[str, Any]:
    from reference_impl.core.db import create_engine, scoped
    from reference_impl.core.errors import AuditError
    from reference_impl.events import repository as events_repository
    from reference_impl.transparency import repository, service
    from reference_impl.transparency.tasks import TransparencyLog

    engine = create_engine(settings)
    try:
        transparency = TransparencyLog.from_settings(engine, settings)
        async with scoped(engine, tenant) as conn:
            marked = await events_repository.compromised(conn, tenant)
            span = await repository.seq_range(conn, tenant, start, end)
            latest = await repository.latest_checkpoint(conn, tenant)
        if marked:
            # Its latest checkpoint may be one the log signed over a rewritten history: a
            # bundle proven against it would vouch for what the witnesses refused.
            fail(
                f"the log of {tenant!r} is marked compromised ({marked[0].kind}); no bundle "
                "is exported until it is investigated and cleared",
                1,
            )
        if span is None:
            fail(f"no event of tenant {tenant!r} was recorded in that range", 1)
        first, last = span
        checkpoint = latest
        if checkpoint is None or checkpoint.tree_size <= last:
            try:
                checkpoint = (await transparency.checkpoint(tenant)).checkpoint
            except AuditError as exc:
                fail(f"cannot issue a checkpoint to export against: {exc.detail}", 1)
        keys = [k.vkey for k in await transparency.published_keys()]
        with BundleWriter(out, tenant, checkpoint.note, keys) as writer, _progress() as bar:
            task = bar.add_task(f"exporting {tenant}", total=last - first + 1)
            async with scoped(engine, tenant) as conn:
                batch: list[Any] = []
                async for row in repository.stream_export(conn, tenant, first, last):
                    batch.append(row)
                    if len(batch) == EXPORT_BATCH:
                        await _write_batch(conn, tenant, checkpoint.tree_size, batch, writer)
                        bar.advance(task, len(batch))
                        batch = []
                if batch:
                    await _write_batch(conn, tenant, checkpoint.tree_size, batch, writer)
                    bar.advance(task, len(batch))
            writer.finish()
        return {
            "events": writer.count,
            "first_seq": writer.first_seq,
            "last_seq": writer.last_seq,
            "origin": service.origin_of(settings.log_origin, tenant),
            "tree_size": checkpoint.tree_size,
            "root_hash": base64.b64encode(checkpoint.root_hash).decode(),
        }
    finally:
        await engine.dispose()


async def _write_batch(
    conn: Any, tenant: str, size: int, rows: list[Any], writer: BundleWriter
) -> None:
    from reference_impl.transparency import service

    proofs = await service.inclusion_proofs(conn, tenant, [r.seq for r in rows], size)
    for row in rows:
        canonical = bytes(row.canonical)
        content = orjson.loads(canonical)
        writer.add(
            BundleEvent(
                seq=row.seq,
                event_id=content["event_id"],
                recorded_at=content["recorded_at"],
                canonical=canonical,
                prev_hash=bytes(row.prev_hash),
                hash=bytes(row.hash),
                proof=tuple(proofs[row.seq]),
            )
        )


# ------------------------------------------------------------------------ verify-bundle


# --8<-- [start:verify-bundle]
def verify_bundle_command(
    path: Annotated[Path, typer.Argument(help="The bundle directory.")],
    key: Annotated[
        list[str],
        typer.Option(
            help="A trusted checkpoint verifier key (<name>+<key id>+<key>); repeat for more."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Verify an export bundle offline: exit 0 if every byte checks out, 1 naming what broke.

    Uses nothing but the bundle and the trusted keys: no settings, database or network.
    """
    try:
        trusted = [NoteVerifier.from_vkey(k) for k in key]
    except NoteError as exc:
        fail(f"--key is not a verifier key: {exc}")
    if not path.is_dir():
        fail(f"{path} is not a bundle directory", 1)
    try:
        report = verify_bundle(path, trusted)
    except BundleError as exc:
        fail(f"bundle does not verify: {exc}", 1)
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    seqs = (
        "no events"
        if report.first_seq is None
        else f"{report.events} events, seq {report.first_seq}..{report.last_seq}"
        f", recorded {report.first_recorded_at} .. {report.last_recorded_at}"
    )
    root = base64.b64encode(report.root_hash).decode()
    console.print(f"bundle verified: {seqs}", highlight=False)
    console.print(f"  origin     {report.origin}", highlight=False)
    console.print(f"  checkpoint tree size {report.tree_size}, root {root}", highlight=False)
    for vkey in report.signed_by:
        console.print(f"  signed by  {vkey}", highlight=False)
    console.print(
        "  every event hashes to its chain hash, links to the one before it, and is "
        "included in the signed tree",
        highlight=False,
    )


# --8<-- [end:verify-bundle]


# ----------------------------------------------------------------------------- log ...


async def _checkpoint(settings: Settings, tenants: list[str] | None) -> list[dict[str, Any]]:
    from reference_impl.core.db import PLATFORM_SCOPE, create_engine, scoped
    from reference_impl.core.errors import AuditError
    from reference_impl.events import repository as events_repository
    from reference_impl.transparency.tasks import TransparencyLog

    engine = create_engine(settings)
    try:
        transparency = TransparencyLog.from_settings(engine, settings)
        if tenants is None:
            async with scoped(engine, PLATFORM_SCOPE) as conn:
                tenants = await events_repository.list_tenants(conn)
        rows = []
        for tenant in tenants:
            try:
                publication = await transparency.checkpoint(tenant)
            except AuditError as exc:
                rows.append({"tenant": tenant, "ok": False, "detail": exc.detail})
                continue
            cp = publication.checkpoint
            refused = [
                w for w in publication.witnesses if w.outcome not in {"accepted", "up_to_date"}
            ]
            rows.append(
                {
                    "tenant": tenant,
                    "ok": not any(w.outcome != "unavailable" for w in refused),
                    "tree_size": cp.tree_size,
                    "root_hash": base64.b64encode(cp.root_hash).decode(),
                    "created": publication.issued.created,
                    "witnesses": [w.as_dict() for w in publication.witnesses],
                    "detail": "; ".join(f"{w.witness}: {w.outcome} {w.reason}" for w in refused),
                }
            )
        return rows
    finally:
        await engine.dispose()


@log_app.command("checkpoint")
def log_checkpoint(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (default: every tenant).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Issue a checkpoint now and publish it to the witnesses; exit 1 if one is refused."""
    settings = load_settings()
    with backends(settings) as resolved:
        rows = asyncio.run(_checkpoint(resolved, None if tenant is None else [tenant]))
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table("tenant", "tree size", "root hash", "new", "witnesses")
        for r in rows:
            if not r["ok"] and "tree_size" not in r:
                table.add_row(r["tenant"], "", "", "", f"[bold red]refused:[/] {r['detail']}")
                continue
            witnesses = ", ".join(f"{w['witness']}={w['outcome']}" for w in r["witnesses"])
            table.add_row(
                r["tenant"], str(r["tree_size"]), r["root_hash"], str(r["created"]), witnesses
            )
        console.print(table)
    raise typer.Exit(0 if all(r["ok"] for r in rows) else 1)


async def _audit(settings: Settings, tenant: str, quiet: bool) -> dict[str, Any]:
    from reference_impl.core.db import create_engine, scope, scoped
    from reference_impl.transparency import repository, service

    engine = create_engine(settings)
    try:
        keys = service.CheckpointKeys.from_settings(settings)
        async with scoped(engine, tenant) as conn:
            published = [NoteVerifier.from_vkey(k.vkey) for k in await repository.list_keys(conn)]
            total = await repository.tree_size(conn, tenant)
        verifiers = list({v.vkey: v for v in [*keys.verifiers, *published]}.values())
        with _progress(quiet=quiet) as bar:
            task = bar.add_task(f"auditing {tenant}", total=total)
            async with engine.connect() as raw:
                conn = await raw.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    await scope(conn, tenant)
                    audit = await service.audit_tree(
                        conn,
                        tenant,
                        verifiers,
                        progress=lambda n: bar.update(task, completed=n),
                    )
        return audit.as_dict()
    finally:
        await engine.dispose()


@log_app.command("audit")
def log_audit(
    tenant: Annotated[str, typer.Option(help="The tenant whose tree to audit.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Rebuild a tenant's tree from its stored events; compare nodes, frontier, checkpoints.

    Exit 0 when the stored tree is exactly the tree of the stored events and every
    checkpoint signs its root, 1 otherwise (each problem is printed).
    """
    settings = load_settings()
    with backends(settings) as resolved:
        result = asyncio.run(_audit(resolved, tenant, as_json))
    if as_json:
        console.print_json(json.dumps(result))
    else:
        verdict = "[green]consistent[/]" if result["ok"] else "[bold red]INCONSISTENT[/]"
        console.print(
            f"{tenant}: {verdict}: {result['leaves']} leaves, {result['nodes']} nodes, "
            f"{result['checkpoints']} checkpoints checked"
        )
        for line in result["problems"]:
            console.print(f"  [red]-[/] {line}", highlight=False)
    raise typer.Exit(0 if result["ok"] else 1)


async def _witness_states(settings: Settings, tenant: str) -> list[dict[str, Any]]:
    from reference_impl.core.db import create_engine, scoped
    from reference_impl.transparency import repository

    engine = create_engine(settings)
    try:
        async with scoped(engine, tenant) as conn:
            records = await repository.witness_records(conn, tenant)
            latest = await repository.latest_checkpoint(conn, tenant)
        size = 0 if latest is None else latest.tree_size
        return [
            {
                "witness": r.witness,
                "accepted_size": r.tree_size,
                "latest_checkpoint": size,
                "last_outcome": r.last_outcome,
                "last_reason": r.last_reason,
                "last_attempt_at": r.last_attempt_at.isoformat(),
            }
            for r in sorted(records.values(), key=lambda r: r.witness)
        ]
    finally:
        await engine.dispose()


@log_app.command("witnesses")
def log_witnesses(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """What each witness last accepted for a tenant and how it answered last.

    Exit 1 if a witness's last answer was a refusal.
    """
    settings = load_settings()
    with backends(settings) as resolved:
        rows = asyncio.run(_witness_states(resolved, tenant))
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table("witness", "accepted size", "latest checkpoint", "last answer", "reason")
        for r in rows:
            table.add_row(
                r["witness"],
                str(r["accepted_size"]),
                str(r["latest_checkpoint"]),
                r["last_outcome"],
                r["last_reason"],
            )
        console.print(table)
    refused = {"bad_note", "rollback", "fork", "inconsistent"}
    raise typer.Exit(1 if any(r["last_outcome"] in refused for r in rows) else 0)


def _witnessed_note(settings: Settings, tenant: str, note_path: Path | None) -> tuple[str, str]:
    """The checkpoint a witness holds for ``tenant``, and where it came from."""
    from reference_impl.transparency import service
    from reference_impl.transparency.witnesses import DirectoryWitness

    if note_path is not None:
        return note_path.read_text(encoding="utf-8"), str(note_path)
    if settings.witness_dir is None:
        fail("no AUDIT_WITNESS_DIR: name a witnessed checkpoint with --checkpoint")
    keys = service.CheckpointKeys.from_settings(settings)
    origin = service.origin_of(settings.log_origin, tenant)
    found = DirectoryWitness(settings.witness_dir, keys.verifiers).latest_note(origin)
    if found is None:
        fail(f"the directory witness holds no checkpoint of {origin}", 1)
    return found, f"directory witness {settings.witness_dir}"


async def _check_witnessed(
    settings: Settings, tenant: str, note: str, source: str
) -> dict[str, Any]:
    from reference_impl.core.db import create_engine, scoped
    from reference_impl.integrity.checkpoint import open_checkpoint
    from reference_impl.transparency import repository, service

    keys = service.CheckpointKeys.from_settings(settings)
    origin = service.origin_of(settings.log_origin, tenant)
    engine = create_engine(settings)
    try:
        async with scoped(engine, tenant) as conn:
            published = [NoteVerifier.from_vkey(k.vkey) for k in await repository.list_keys(conn)]
            try:
                checkpoint = open_checkpoint(note, [*keys.verifiers, *published], origin=origin)
            except NoteError as exc:
                fail(f"the witnessed checkpoint does not verify: {exc}", 1)
            result = await service.compare_with_witnessed(conn, tenant, checkpoint)
    finally:
        await engine.dispose()

    def b64(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    return {
        "tenant": tenant,
        "source": source,
        "tree_size": result.size,
        "witnessed_root": b64(result.witnessed_root),
        "events_root": b64(result.events_root),
        "tree_root": b64(result.tree_root),
        "consistent": result.consistent,
    }


@log_app.command("check-witnessed")
def log_check_witnessed(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint a witness accepted (default: the directory witness's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the stored events and tree against the checkpoint a witness last accepted.

    Exit 0 when both give the witnessed root at its size; 1 when the log's history
    changed after the witness saw it.
    """
    settings = load_settings()
    with backends(settings) as resolved:
        note, source = _witnessed_note(resolved, tenant, checkpoint)
        result = asyncio.run(_check_witnessed(resolved, tenant, note, source))
    if as_json:
        console.print_json(json.dumps(result))
    else:
        verdict = (
            "[green]the stored history is the one the witness saw[/]"
            if result["consistent"]
            else "[bold red]the stored history CHANGED after the witness saw it[/]"
        )
        console.print(f"{tenant}: {verdict}")
        console.print(f"  witnessed  size {result['tree_size']}, root {result['witnessed_root']}")
        console.print(f"  events     root {result['events_root']}", highlight=False)
        console.print(f"  tree nodes root {result['tree_root']}", highlight=False)
        console.print(f"  source     {result['source']}", highlight=False)
    raise typer.Exit(0 if result["consistent"] else 1)


@log_app.command("witness-dir")
def log_witness_dir(
    directory: Annotated[Path, typer.Argument(help="The witness directory.")],
    key: Annotated[list[str], typer.Option(help="A trusted log verifier key; repeatable.")],
) -> None:
    """Run the witness side of a directory witness: decide on every waiting submission.

    Needs only the directory and the log's public keys. Exit 1 if one was refused.
    """
    from reference_impl.transparency.witnesses import DirectoryWitness

    try:
        trusted = [NoteVerifier.from_vkey(k) for k in key]
    except NoteError as exc:
        fail(f"--key is not a verifier key: {exc}")
    decisions = DirectoryWitness(directory, trusted).process()
    for request, decision in decisions:
        console.print(
            f"{request.parent.parent.name}/{request.name}: {decision.outcome} ({decision.reason})",
            highlight=False,
        )
    console.print(f"{len(decisions)} submission(s) processed", highlight=False)
    raise typer.Exit(0 if all(d.accepted for _, d in decisions) else 1)
