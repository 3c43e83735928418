"""`auditkit bench`: one reproducible benchmark on this machine, with a report and plots.

The harness lives in `loadtests/bench/` at the top of the repository, next to the Locust
scenarios rather than inside the service: it is imported only when the command runs, so the
service installs and starts without it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    from loadtests.bench.run import BenchResult

__all__ = ["bench"]

DEFAULT_OUT = Path(".auditkit/bench")


def _rates(value: str) -> tuple[float, ...]:
    try:
        rates = tuple(sorted(float(v) for v in value.split(",") if v.strip()))
    except ValueError:
        raise typer.BadParameter("a comma-separated list of events per second") from None
    if not rates or min(rates) <= 0:
        raise typer.BadParameter("a comma-separated list of positive rates")
    return rates


# --8<-- [start:bench-command]
def bench(
    out: Annotated[
        Path, typer.Option(help="Where benchmark.md goes (data and plots: OUT/benchmark/).")
    ] = DEFAULT_OUT,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes, short phases: a smoke run (< 2 min).")
    ] = False,
    events: Annotated[
        int | None, typer.Option(min=1000, help="Events of the large tenant (default 1M).")
    ] = None,
    rates: Annotated[
        str | None, typer.Option(help="Offered single-event rates, e.g. 500,1000,2000.")
    ] = None,
    rate_seconds: Annotated[
        float | None, typer.Option(min=1, help="Seconds of load at each rate.")
    ] = None,
    floor_rates: Annotated[
        str | None,
        typer.Option(help="Offered rates of the HTTP floor (no-op app), e.g. 2000,6000."),
    ] = None,
    connections: Annotated[
        int | None,
        typer.Option(
            min=1, max=16384, help="Most connections of the open-loop client (default 1024)."
        ),
    ] = None,
    batch_seconds: Annotated[float | None, typer.Option(min=1, help="Seconds of batches.")] = None,
    query_samples: Annotated[
        int | None, typer.Option(min=5, help="Requests per query kind.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=16, help="API processes (serve --workers).")
    ] = None,
) -> None:
    """Benchmark the service on servers the run starts: COPY ceiling, HTTP floor, single
    and batch ingest, queued mode, verification, proofs, queries and memory."""
    try:
        from loadtests.bench.run import BenchConfig, run_benchmark
    except ImportError:
        fail("the harness lives in loadtests/ at the top of the repository; run from a checkout")
    from dataclasses import replace

    config = BenchConfig.quick() if quick else BenchConfig()
    changes: dict[str, Any] = {
        "events": events,
        "rates": None if rates is None else _rates(rates),
        "rate_seconds": rate_seconds,
        "floor_rates": None if floor_rates is None else _rates(floor_rates),
        "connections": connections,
        "batch_seconds": batch_seconds,
        "query_samples": query_samples,
        "api_workers": workers,
    }
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    command = shlex.join(["auditkit", "bench", *sys.argv[2:]])
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[detail]:<24}"),
        TimeElapsedColumn(),
        console=err_console,
        # Drawing the bars takes the load generator's interpreter about 4 ms each time
        # (ten phases, in a terminal); ten times a second that is a pause in 4 % of the
        # measured time, enough to show in a p99.
        refresh_per_second=1,
    ) as progress:
        reporter = _ProgressReporter(progress)
        result = run_benchmark(config, out, command, reporter=reporter)
    _summary(result)
    console.print(f"report: {out / 'benchmark.md'}", highlight=False)


# --8<-- [end:bench-command]


class _ProgressReporter:
    """Draws a run's phases as rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def phase(self, name: str, total: float | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total or 1)
        self.task = self.progress.add_task(name, total=total, detail="")

    def advance(self, done: float, detail: str = "") -> None:
        if self.task is not None:
            if detail:
                self.progress.update(self.task, completed=done, detail=detail)
            else:
                self.progress.update(self.task, completed=done)

    def done(self, name: str, summary: str) -> None:
        if self.task is not None:
            total = self.progress.tasks[-1].total
            self.progress.update(self.task, completed=total or 1, total=total or 1, detail=summary)
            self.task = None


def _summary(result: BenchResult) -> None:
    from loadtests.bench.report import summary_rows

    table = Table("measure", "result", "goal", "met")
    for row in summary_rows(result):
        table.add_row(*(cell.replace("**", "") for cell in row))
    console.print(table)
