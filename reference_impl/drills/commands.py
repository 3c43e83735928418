"""`auditkit drill chaos NAME|all`: run chaos drills, write their journals, report and plot.

The drills themselves live in `chaos/` at the top of the repository (experiments, actions,
probes, the history checker), next to the service rather than inside it: they are imported
only when a drill runs, so the service installs and starts without them.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from reference_impl.core.commands import console, err_console, fail

if TYPE_CHECKING:
    from chaos.report import DrillResult

__all__ = ["chaos", "drill_app"]

drill_app = typer.Typer(help="Run chaos drills against servers the drill starts.")

DEFAULT_OUT = Path(".auditkit/drills/chaos")


# --8<-- [start:chaos-command]
@drill_app.command("chaos")
def chaos(
    name: Annotated[str, typer.Argument(help="A drill's name, or `all`.")],
    duration: Annotated[
        float, typer.Option(min=10, max=3600, help="Seconds of load per drill.")
    ] = 60.0,
    out: Annotated[
        Path, typer.Option(help="Where the report, its plot and the journals go.")
    ] = DEFAULT_OUT,
    work: Annotated[
        Path | None,
        typer.Option(help="Keep each run's history, verdict and logs here (default: temporary)."),
    ] = None,
) -> None:
    """Run chaos drills; exit 1 if any loses or doubles an event, breaks a chain, or does not
    recover within 30 s."""
    try:
        from chaos.report import drill_names, run_drills
    except ImportError:
        fail("the drills live in chaos/ at the top of the repository; run from a checkout")
    try:
        names = drill_names(name)
    except ValueError as exc:
        fail(str(exc))
    command = shlex.join(
        ["auditkit", "drill", "chaos", name, "--duration", f"{duration:g}", "--out", str(out)]
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[drill]:<21}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[phase]:<38}"),
        TextColumn("{task.fields[acks]:>6} acked {task.fields[errors]:>5} errors"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        from chaos.report import phases_for

        expected = phases_for(duration).total_s + 20  # setup, settling and checks
        tasks: dict[str, TaskID] = {
            n: progress.add_task(n, total=expected, drill=n, phase="waiting", acks=0, errors=0)
            for n in names
        }

        def update(drill: str, phase: str, acks: int, errors: int, elapsed: float) -> None:
            progress.update(tasks[drill], completed=elapsed, phase=phase, acks=acks, errors=errors)

        def done(result: DrillResult) -> None:
            verdict = "[green]pass[/]" if result.passed else "[bold red]FAIL[/]"
            progress.update(tasks[result.name], completed=expected, phase=verdict)

        results, report = run_drills(
            names, out, duration, command, work_dir=work, progress=update, on_done=done
        )
    _summary(results)
    console.print(f"report: {report}", highlight=False)
    failed = [r for r in results if not r.passed]
    for r in failed:
        problems = r.verdict.problems() if r.verdict else ["no verdict: the experiment failed"]
        problems += [f"activity {a!r} failed" for a in r.failed_activities]
        where = f" (run files: {r.run_dir})" if r.run_dir and r.run_dir.exists() else ""
        err_console.print(f"[red]{r.name}:[/] {'; '.join(problems) or r.status}{where}")
    raise typer.Exit(1 if failed else 0)


# --8<-- [end:chaos-command]


def _summary(results: list[DrillResult]) -> None:
    table = Table("drill", "acked", "stored", "lost", "dup", "first success s", "p99 s", "chain")
    for r in results:
        row = r.row()
        table.add_row(
            r.name,
            str(row.acknowledged),
            str(row.stored),
            str(row.lost),
            str(row.duplicates),
            "-" if row.first_success_s is None else f"{row.first_success_s:.2f}",
            "-" if row.p99_s is None else f"{row.p99_s:.2f}",
            "valid" if row.chain_valid else "[bold red]BROKEN[/]",
        )
    console.print(table)
