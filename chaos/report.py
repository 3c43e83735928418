"""Run the chaos drills and write their report: `auditkit drill chaos NAME|all`.

Each drill is one Chaos Toolkit run (`chaos run --rollback-strategy always`) of its
experiment in `chaos/experiments/`, in its own process, with its own servers. The runner
scales the phases to the requested duration, follows the run's timeline while it goes (rich
progress), then reads three things back: the Chaos Toolkit journal (status, deviation), the
checker's verdict (`check.json`) and the load history (for the plot).

The report is markdown (one row per drill: fault, acknowledged, stored, lost, duplicates,
recovery seconds, chain valid) with a PNG of throughput and errors over time. It is written
by `render_report` and read back by `parse_report`, so a committed report can be checked to
be exactly what the command writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.checker import NOT_RECOVERED, Verdict, fault_windows
from chaos.harness import REPO_ROOT, read_lines, stop_run

__all__ = [
    "DRILLS",
    "EXPERIMENTS",
    "PLOT_NAME",
    "RECOVERY_TARGET_S",
    "DrillResult",
    "Phases",
    "ReportMeta",
    "ReportRow",
    "drill_names",
    "parse_report",
    "phases_for",
    "plot_results",
    "render_report",
    "run_drill",
    "run_drills",
]

EXPERIMENTS = REPO_ROOT / "chaos" / "experiments"
PLOT_NAME = "chaos-drills.png"
REPORT_NAME = "report.md"
RECOVERY_TARGET_S = 30.0

# --8<-- [start:drills]
DRILLS = (
    "postgres-kill",
    "postgres-freeze",
    "postgres-connections",
    "valkey-kill",
    "valkey-oom",
    "worker-kill",
    "api-kill",
    "pgbouncer",
    "clock-skew",
)
"""Every drill, in the order `all` runs them; each is `chaos/experiments/<name>.yaml`."""
# --8<-- [end:drills]


def drill_names(selector: str) -> list[str]:
    """`all`, or one drill's name.

    Raises:
        ValueError: no drill has that name.
    """
    if selector == "all":
        return list(DRILLS)
    if selector not in DRILLS:
        raise ValueError(f"no drill {selector!r}; choose one of: all, {', '.join(DRILLS)}")
    return [selector]


# --------------------------------------------------------------------------------- phases


# --8<-- [start:phases]
@dataclass(frozen=True)
class Phases:
    """Seconds of each phase of a drill's load: steady, fault, recovery."""

    steady_s: float
    fault_s: float
    recover_s: float

    @property
    def total_s(self) -> float:
        """Seconds of load."""
        return self.steady_s + self.fault_s + self.recover_s


def phases_for(duration_s: float) -> Phases:
    """Split ``duration_s`` seconds of load: a fifth steady, a fifth (at most 10 s) of fault,
    the rest to recover (at least 12 s: longer than the breakers' 10 s reset)."""
    steady = max(4.0, round(duration_s * 0.2, 1))
    fault = min(10.0, max(3.0, round(duration_s * 0.2, 1)))
    recover = max(12.0, round(duration_s - steady - fault, 1))
    return Phases(steady, fault, recover)


# --8<-- [end:phases]


# --------------------------------------------------------------------------------- a run


@dataclass
class DrillResult:
    """What one drill found."""

    name: str
    fault: str
    status: str
    deviated: bool
    exit_code: int
    verdict: Verdict | None
    timeline: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    failed_activities: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Completed within its hypothesis, nothing lost or doubled, chains valid, recovered
        within the target."""
        v = self.verdict
        if v is None or self.exit_code != 0 or self.deviated or not v.ok:
            return False
        if self.failed_activities or self.status != "completed":
            return False  # a fault that was not injected proves nothing
        worst = [v.recovery_first_success_s, v.recovery_p99_s]
        return all(w is not None and 0 <= w <= RECOVERY_TARGET_S for w in worst)

    def row(self) -> ReportRow:
        """The report's row."""
        v = self.verdict or Verdict()
        return ReportRow(
            drill=self.name,
            fault=self.fault,
            acknowledged=v.acknowledged,
            stored=v.stored,
            lost=len(v.lost),
            duplicates=len(v.duplicates),
            first_success_s=v.recovery_first_success_s,
            p99_s=v.recovery_p99_s,
            chain_valid=v.chain_valid,
            passed=self.passed,
            stored_unacknowledged=v.stored_unacknowledged,
            rejected=v.rejected,
            attempts=v.attempts,
            errors=v.errors,
            steady_p99_ms=v.steady_p99_ms,
            status="deviated" if self.deviated else self.status,
        )


Progress = Callable[[str, str, int, int, float], None]
"""Called while a drill runs: (drill, phase, acknowledged, errors, elapsed seconds)."""


def _chaos_command() -> list[str]:
    found = Path(sys.executable).parent / "chaos"
    return [str(found)] if found.exists() else [sys.executable, "-m", "chaostoolkit"]


# --8<-- [start:chaos-run]
def chaos_run_args(experiment: Path, run_dir: Path, journal: Path, phases: Phases) -> list[str]:
    """The `chaos run` command line of one drill."""
    return [
        *_chaos_command(),
        *("--log-file", str(run_dir / "chaostoolkit.log")),
        *("--settings", str(run_dir / "chaostoolkit-settings.yaml")),
        "run",
        *("--journal-path", str(journal)),
        # Rollbacks stop every server and process, also when the experiment fails.
        *("--rollback-strategy", "always"),
        # The method starts the system, so the hypothesis is checked once it has recovered.
        *("--hypothesis-strategy", "after-method-only"),
        *("--var", f"run_dir={run_dir}"),
        *("--var", f"steady_s:float={phases.steady_s}"),
        *("--var", f"fault_s:float={phases.fault_s}"),
        *("--var", f"pause_s:float={round(phases.fault_s / 2, 1)}"),
        *("--var", f"recover_s:float={phases.recover_s}"),
        str(experiment),
    ]


# --8<-- [end:chaos-run]


def _title(experiment: Path) -> str:
    for line in experiment.read_text(encoding="utf-8").splitlines():
        if line.startswith("title:"):
            return line.removeprefix("title:").strip()
    return experiment.stem


class _Follower:
    """Reads a run's marks and history as they grow, for the progress display."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offset = 0
        self.acks = 0
        self.errors = 0

    def phase(self) -> str:
        marks = read_lines(self.run_dir / "marks.ndjson")
        if not marks:
            return "starting servers"
        last = marks[-1]
        names = {
            "stack_up": "starting load",
            "load_start": "steady load",
            "fault_start": f"fault: {last.get('what', '')}",
            "fault_end": "recovering",
            "load_stop": "settling, draining, checking",
        }
        return names.get(str(last["mark"]), str(last["mark"]))

    def poll(self) -> None:
        path = self.run_dir / "history.ndjson"
        if not path.exists():
            return
        with path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            if b'"k":"ack"' in line:
                self.acks += 1
            elif b'"result":"info"' in line:
                self.errors += 1


# --8<-- [start:run-drill]
def run_drill(
    name: str,
    out_dir: Path,
    duration_s: float,
    work_dir: Path,
    progress: Progress | None = None,
) -> DrillResult:
    """Run one drill's experiment with the Chaos Toolkit and read back what it found.

    The journal goes to `out_dir/journals/<name>.json`; the run's files (history, marks,
    verdict, logs) to `work_dir/<name>/`.
    """
    experiment = EXPERIMENTS / f"{name}.yaml"
    run_dir = (work_dir / name).resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "chaostoolkit-settings.yaml").write_text("{}\n", encoding="utf-8")
    journal = (out_dir / "journals" / f"{name}.json").resolve()
    journal.parent.mkdir(parents=True, exist_ok=True)
    phases = phases_for(duration_s)
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    started = time.monotonic()
    deadline = started + phases.total_s + 300  # setup, settling, drain and checks included
    follower = _Follower(run_dir)
    with (run_dir / "chaos.out").open("wb") as out:
        proc = subprocess.Popen(
            chaos_run_args(experiment, run_dir, journal, phases),
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.send_signal(signal.SIGINT)  # Chaos Toolkit still plays the rollbacks
                    proc.wait(120)
                    break
                follower.poll()
                if progress is not None:
                    elapsed = time.monotonic() - started
                    progress(name, follower.phase(), follower.acks, follower.errors, elapsed)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stop_run(run_dir)  # what a crashed run left behind, if anything
    return _result(name, experiment, run_dir, journal, proc.returncode)


# --8<-- [end:run-drill]


def _result(name: str, experiment: Path, run_dir: Path, journal: Path, code: int) -> DrillResult:
    status, deviated, failed = "missing", True, []
    if journal.exists():
        data = json.loads(journal.read_text(encoding="utf-8"))
        status, deviated = str(data.get("status")), bool(data.get("deviated"))
        failed = [
            str(run["activity"]["name"])
            for run in data.get("run") or []
            if run.get("status") != "succeeded"
        ]
    verdict = None
    check = run_dir / "check.json"
    if check.exists():
        verdict = Verdict.from_dict(json.loads(check.read_text(encoding="utf-8")))
    return DrillResult(
        name=name,
        fault=_title(experiment),
        status=status,
        deviated=deviated,
        exit_code=code,
        verdict=verdict,
        timeline=timeline(run_dir),
        run_dir=run_dir,
        failed_activities=failed,
    )


def timeline(run_dir: Path) -> dict[str, Any]:
    """Per second since the load started: events acknowledged, attempts failed (5xx,
    timeouts, dropped connections) and events refused; and the fault windows."""
    marks = read_lines(run_dir / "marks.ndjson")
    history = read_lines(run_dir / "history.ndjson")
    attempts = [r for r in history if r["k"] == "attempt"]
    if not attempts:
        return {}
    origin = min(float(a["t0"]) for a in attempts)
    seconds = int(max(float(a["t1"]) for a in attempts) - origin) + 1
    acked, errors, refused = [0] * seconds, [0] * seconds, [0] * seconds
    for a in attempts:
        i = int(float(a["t1"]) - origin)
        if a["result"] == "ok":
            acked[i] += int(a["n"])
        elif a["result"] == "info":
            errors[i] += 1
        else:
            refused[i] += int(a["n"])
    windows = [
        [round(w.start - origin, 2), round(w.end - origin, 2), w.what] for w in fault_windows(marks)
    ]
    return {"acked": acked, "errors": errors, "refused": refused, "faults": windows}


# ---------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportMeta:
    """The report's header."""

    command: str
    generated: str
    duration_s: float


@dataclass(frozen=True)
class ReportRow:
    """One drill's line of the report (and of its details table)."""

    drill: str
    fault: str
    acknowledged: int
    stored: int
    lost: int
    duplicates: int
    first_success_s: float | None
    p99_s: float | None
    chain_valid: bool
    passed: bool
    stored_unacknowledged: int
    rejected: int
    attempts: int
    errors: int
    steady_p99_ms: float | None
    status: str


_TITLE = "# Chaos drill report"
_SUMMARY = (
    "| drill | fault | acknowledged | stored | lost | duplicates "
    "| recovery, first success (s) | recovery, p99 (s) | chain valid | result |"
)
_DETAILS = (
    "| drill | stored, not acknowledged | refused as expected (422) | attempts "
    "| errors (5xx, timeouts) | steady p99 (ms) | experiment |"
)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == NOT_RECOVERED:
        return "not recovered"
    return f"{value:.2f}"


def _read_seconds(text: str) -> float | None:
    if text == "-":
        return None
    if text == "not recovered":
        return NOT_RECOVERED
    return float(text)


# --8<-- [start:render]
def render_report(meta: ReportMeta, rows: Sequence[ReportRow]) -> str:
    """The markdown report: summary table, plot, details table."""
    passed = sum(r.passed for r in rows)
    lines = [
        _TITLE,
        "",
        f"Written by `{meta.command}` on {meta.generated}: "
        f"{len(rows)} drill(s), {meta.duration_s:g} s of load each; {passed} passed.",
        "",
        "A drill passes when its Chaos Toolkit hypothesis held, no acknowledged event is lost "
        "or stored twice, every chain verifies, and the service recovered within "
        f"{RECOVERY_TARGET_S:g} s of the end of each fault.",
        "",
        _SUMMARY,
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.drill} | {r.fault} | {r.acknowledged} | {r.stored} | {r.lost} "
            f"| {r.duplicates} | {_seconds(r.first_success_s)} | {_seconds(r.p99_s)} "
            f"| {'yes' if r.chain_valid else 'NO'} | {'pass' if r.passed else 'FAIL'} |"
        )
    lines += [
        "",
        f"![Events acknowledged and errors per second in each drill; faults shaded]({PLOT_NAME})",
        "",
        "## Details",
        "",
        _DETAILS,
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        p99 = "-" if r.steady_p99_ms is None else f"{r.steady_p99_ms:.1f}"
        lines.append(
            f"| {r.drill} | {r.stored_unacknowledged} | {r.rejected} | {r.attempts} "
            f"| {r.errors} | {p99} | {r.status} |"
        )
    return "\n".join(lines) + "\n"


# --8<-- [end:render]


_HEADER = re.compile(
    r"^Written by `(?P<command>[^`]+)` on (?P<generated>.+?): (?P<count>\d+) drill\(s\), "
    r"(?P<duration>[\d.]+) s of load each; (?P<passed>\d+) passed\.$"
)


def _cells(line: str) -> list[str]:
    if not (line.startswith("| ") and line.endswith(" |")):
        raise ValueError(f"not a table row: {line!r}")
    return [c.strip() for c in line[2:-2].split(" | ")]


def parse_report(text: str) -> tuple[ReportMeta, list[ReportRow]]:
    """Read a report written by `render_report`.

    Raises:
        ValueError: the text is not in that format.
    """
    lines = text.splitlines()
    if not lines or lines[0] != _TITLE:
        raise ValueError("no report title")
    header = next((m for line in lines if (m := _HEADER.match(line))), None)
    if header is None:
        raise ValueError("no header line naming the command")
    meta = ReportMeta(header["command"], header["generated"], float(header["duration"]))
    summary = _table(lines, _SUMMARY)
    details = {cells[0]: cells for cells in _table(lines, _DETAILS)}
    rows = []
    for cells in summary:
        if len(cells) != 10 or cells[0] not in details or len(details[cells[0]]) != 7:
            raise ValueError(f"row of {cells[0]!r} does not match the report's columns")
        d = details[cells[0]]
        rows.append(
            ReportRow(
                drill=cells[0],
                fault=cells[1],
                acknowledged=int(cells[2]),
                stored=int(cells[3]),
                lost=int(cells[4]),
                duplicates=int(cells[5]),
                first_success_s=_read_seconds(cells[6]),
                p99_s=_read_seconds(cells[7]),
                chain_valid=cells[8] == "yes",
                passed=cells[9] == "pass",
                stored_unacknowledged=int(d[1]),
                rejected=int(d[2]),
                attempts=int(d[3]),
                errors=int(d[4]),
                steady_p99_ms=None if d[5] == "-" else float(d[5]),
                status=d[6],
            )
        )
    return meta, rows


def _table(lines: list[str], header: str) -> list[list[str]]:
    try:
        start = lines.index(header) + 2
    except ValueError:
        raise ValueError(f"no table {header!r}") from None
    out = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        out.append(_cells(line))
    return out


# ------------------------------------------------------------------------------ the plot


# --8<-- [start:plot]
def plot_results(results: Sequence[DrillResult], path: Path) -> None:
    """One panel per drill: events acknowledged per second (green), failed attempts per
    second (red), events refused (orange); fault windows shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.timeline]
    fig, axes = plt.subplots(
        max(1, len(shown)), 1, figsize=(10, 1.7 * max(1, len(shown)) + 0.8), squeeze=False
    )
    for ax, result in zip(axes[:, 0], shown, strict=False):
        t = result.timeline
        xs = list(range(len(t["acked"])))
        ax.plot(xs, t["acked"], color="tab:green", label="events acknowledged/s")
        ax.plot(xs, t["errors"], color="tab:red", label="failed attempts/s")
        if any(t["refused"]):
            ax.plot(xs, t["refused"], color="tab:orange", label="events refused/s")
        for start, end, _ in t["faults"]:
            ax.axvspan(start, max(end, start + 0.3), color="0.6", alpha=0.35, lw=0)
        verdict = "pass" if result.passed else "FAIL"
        ax.set_title(f"{result.name}: {verdict}", loc="left", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncols=3)
    axes[-1, 0].set_xlabel("seconds since the load started (faults shaded)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --8<-- [end:plot]


def write_report(
    results: Sequence[DrillResult], out_dir: Path, command: str, duration_s: float
) -> Path:
    """Write `report.md` and its plot to ``out_dir``; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = ReportMeta(
        command=command,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        duration_s=duration_s,
    )
    plot_results(results, out_dir / PLOT_NAME)
    path = out_dir / REPORT_NAME
    path.write_text(render_report(meta, [r.row() for r in results]), encoding="utf-8")
    return path


def run_drills(
    names: Sequence[str],
    out_dir: Path,
    duration_s: float,
    command: str,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    on_done: Callable[[DrillResult], None] | None = None,
) -> tuple[list[DrillResult], Path]:
    """Run drills one after the other, then write the report; returns results and its path.

    The run directories stay in ``work_dir`` (a temporary directory when None, removed when
    every drill passed).
    """
    work = work_dir or Path(tempfile.mkdtemp(prefix="auditkit-drills-"))
    results = []
    for name in names:
        result = run_drill(name, out_dir, duration_s, work, progress)
        results.append(result)
        if on_done is not None:
            on_done(result)
    report = write_report(results, out_dir, command, duration_s)
    if work_dir is None and all(r.passed for r in results):
        shutil.rmtree(work, ignore_errors=True)
    return results, report
