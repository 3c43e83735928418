"""The benchmark's markdown report and its plots, rendered from the JSON of a run.

`benchmark.md` is a pure function of `benchmark/benchmark.json`, so the committed report can
be checked against its data, and a report can be re-rendered without measuring again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.bench.run import BenchResult

__all__ = [
    "CPU_PARTS",
    "GOALS",
    "PLOTS",
    "cpu_rows",
    "floor_rate",
    "floor_reached",
    "render_report",
    "write_report",
]

PLOTS = ("single-events.png", "throughput.png", "queries.png", "cpu.png")

# The parts of the stack a CPU breakdown names, in the order of its columns.
CPU_PARTS = (
    ("api", "API"),
    ("postgres", "PostgreSQL"),
    ("valkey", "Valkey"),
    ("worker", "worker"),
    ("generator", "load generator"),
)

# The goals of the performance work on a two-core machine with the load generator beside the
# service (issue: load drills and the benchmark harness).
GOALS = {
    "single_events_per_s": 5000.0,
    "p99_at_1000_ms": 25.0,
    "batch_of_ceiling": 0.5,
}


def _n(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}"


def _ms(value: float | None) -> str:
    if value is None or value != value:  # NaN: no samples
        return "-"
    return f"{value:,.1f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rate_table(offered: str, achieved: str, points: list[dict[str, Any]]) -> list[str]:
    """The rows of an open-loop sweep: rate, latency, failures, and waits for a connection."""
    lines = [
        f"| {offered} | {achieved} | p50 ms | p99 ms | p99.9 ms | errors | unanswered "
        "| waited for a connection |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lat = p["latency"]
        # Reports written before the count existed have no `waited`.
        waited = f"{p['waited']:,}" if "waited" in p else "-"
        lines.append(
            f"| {p['offered_per_s']:,.0f} | {p['achieved_per_s']:,.0f} | {_ms(lat['p50_ms'])} "
            f"| {_ms(lat['p99_ms'])} | {_ms(lat['p999_ms'])} | {p['errors']:,} "
            f"| {p['unanswered']:,} | {waited} |"
        )
    return lines


def _connections_sentence(config: dict[str, Any]) -> str:
    """How many connections the client could open, and what a wait for one means."""
    connections = config.get("connections")
    if connections is None:
        return ""
    return (
        f"The client opened connections as requests needed them, up to {connections:,}; a "
        "request due while all were busy waited for one (counted below): at such a rate the "
        "client's connections, not only the service, set how many requests were in flight."
    )


def _point_at(result: BenchResult, rate: float) -> dict[str, Any] | None:
    return next((p for p in result.single if p["offered_per_s"] == rate), None)


def floor_rate(result: BenchResult) -> float | None:
    """The highest rate the no-op app achieved (None when the run did not measure it)."""
    return max((p["achieved_per_s"] for p in result.floor), default=None)


def floor_reached(result: BenchResult) -> bool:
    """Whether the floor was found: the highest offered rate was no longer kept up with."""
    if not result.floor:
        return False
    last = result.floor[-1]
    return bool(last["achieved_per_s"] < 0.95 * last["offered_per_s"])


def _unattributed(cpu: dict[str, float]) -> float:
    return max(0.0, cpu.get("machine", 0.0) - sum(cpu.get(k, 0.0) for k, _ in CPU_PARTS))


def _cpu_measured(result: BenchResult) -> list[tuple[float | None, float, dict[str, float]]]:
    """(offered rate, achieved events/s, CPU per event) of each single-event rate measured,
    then of batch ingest (offered rate `None`)."""
    measured: list[tuple[float | None, float, dict[str, float]]] = [
        (p["offered_per_s"], p["achieved_per_s"], p["cpu_us"])
        for p in result.single
        if p.get("cpu_us")
    ]
    if result.batch.get("cpu_us"):
        measured.append((None, result.batch["events_per_s"], result.batch["cpu_us"]))
    return measured


def cpu_rows(result: BenchResult) -> list[list[str]]:
    """Rows of the CPU table: each offered single-event rate, then batch ingest (per event).

    Columns: what was measured, achieved events/s, µs of CPU per event for each part of
    `CPU_PARTS`, unattributed, the whole machine, and the cores the machine kept busy.
    """
    rows = []
    for offered, achieved, cpu in _cpu_measured(result):
        size = result.batch.get("batch_size", "-")
        name = f"batch of {size}" if offered is None else f"single, {offered:,.0f}/s offered"
        busy = cpu.get("machine", 0.0) * achieved / 1e6
        rows.append(
            [
                name,
                _n(achieved),
                *(_n(cpu.get(key)) for key, _ in CPU_PARTS),
                _n(_unattributed(cpu)),
                _n(cpu.get("machine")),
                f"{busy:.2f}",
            ]
        )
    return rows


def _settled(result: BenchResult) -> str:
    seconds = result.batch.get("settled_s")
    if seconds is None:
        return ""
    return (
        " What the single-event phases wrote was vacuumed, analysed and checkpointed in the "
        f"same way before batch ingest ({seconds:,.1f} s)."
    )


def _quiet(result: BenchResult) -> str:
    quiet = result.ceiling.get("quiet")
    if not quiet:
        return ""
    return (
        f" The single-event phase then waited {quiet['waited_s']:g} s for the machine to go "
        f"quiet (it started with {quiet['busy_cores']:.2f} cores busy)."
    )


def _cpu_section(result: BenchResult, plot_dir: str) -> list[str]:
    rows = cpu_rows(result)
    if not rows:
        return []
    cpus = result.machine["cpus"]
    budget = cpus * 1e6 / GOALS["single_events_per_s"]
    top = max(
        (p for p in result.single if p.get("cpu_us")),
        key=lambda p: p["achieved_per_s"],
    )
    at_top = top["cpu_us"].get("machine", 0.0)
    bound = cpus * 1e6 / at_top if at_top else 0.0
    floor = [p for p in result.floor if p.get("cpu_us")]
    floor_text = ""
    if floor:
        last = floor[-1]
        floor_text = (
            f" The no-op app's server spent {_n(last['cpu_us'].get('server'))} µs per request "
            f"at {last['achieved_per_s']:,.0f} requests/s: that much of the API's share is "
            "HTTP alone."
        )
    header = " | ".join(label for _, label in CPU_PARTS)
    return [
        "## Where the CPU goes",
        "",
        "Microseconds of CPU (user + system) per event, by part, measured around each open-loop "
        "rate and the batch phase: the API processes, PostgreSQL with its backends, Valkey, the "
        "queue worker (idle here), the load generator, and what the machine's cores spent "
        "beyond them (unattributed: the kernel's network work in interrupt context, processes "
        "that ended meanwhile). "
        f"The machine has {cpus} cores: {cpus:,} million µs of CPU a second, so no rate can "
        "pass that divided by the µs per event, however latency goes; "
        f"{GOALS['single_events_per_s']:,.0f} single events/s leave {budget:,.0f} µs per event "
        "for all of them together. At the highest achieved rate "
        f"({top['achieved_per_s']:,.0f} events/s) the machine spent {at_top:,.0f} µs per "
        f"event: at that cost, {bound:,.0f} events/s at most (below saturation an event costs "
        f"more, since the service's fixed work is shared by fewer events).{floor_text}",
        "",
        f"| measured | achieved events/s | {header} | unattributed | machine | cores busy |",
        "|---|" + "---|" * (len(CPU_PARTS) + 4),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"![CPU per event by part]({plot_dir}/{PLOTS[3]})",
        "",
    ]


def summary_rows(result: BenchResult) -> list[tuple[str, str, str, str]]:
    """(measure, result, goal, met) rows of the summary table."""
    best = max((p["achieved_per_s"] for p in result.single), default=0.0)
    floor = floor_rate(result)
    reached = floor_reached(result)
    of_floor = f" ({best / floor:.0%} of the HTTP floor)" if floor and reached else ""
    floor_text = _n(floor, " requests/s")
    if floor is not None and not reached:
        floor_text = f"above {floor_text} (kept up with every offered rate)"
    at_1000 = _point_at(result, 1000.0)
    p99_1000 = None if at_1000 is None else at_1000["latency"]["p99_ms"]
    ratio = result.batch.get("of_ceiling", 0.0)
    mem = result.memory
    rows = [
        (
            "COPY ceiling (same rows, same database)",
            _n(result.ceiling.get("events_per_s"), " events/s"),
            "-",
            "-",
        ),
        (
            "HTTP floor (no-op app, same server and processes)",
            floor_text,
            "-",
            "-",
        ),
        (
            "single events: highest achieved rate",
            _n(best, " events/s") + of_floor,
            f">= {GOALS['single_events_per_s']:,.0f} events/s",
            _met(best >= GOALS["single_events_per_s"]),
        ),
        (
            "single events: highest offered rate with p99 < 100 ms",
            _n(result.sustained_rate_per_s, " events/s"),
            "-",
            "-",
        ),
        (
            "single events: p99 at 1,000 events/s offered",
            "-" if p99_1000 is None else f"{p99_1000:,.1f} ms",
            f"< {GOALS['p99_at_1000_ms']:.0f} ms",
            "-" if p99_1000 is None else _met(p99_1000 < GOALS["p99_at_1000_ms"]),
        ),
        (
            f"batch ingest ({result.batch.get('batch_size', '-')} events a request)",
            f"{_n(result.batch.get('events_per_s'), ' events/s')} ({ratio:.1%} of COPY)",
            f">= {GOALS['batch_of_ceiling']:.0%} of COPY",
            _met(ratio >= GOALS["batch_of_ceiling"]),
        ),
        ("queued mode: accept rate", _n(result.queued.get("accept_per_s"), " events/s"), "-", "-"),
        (
            "queued mode: drain rate (one worker)",
            _n(result.queued.get("drain_per_s"), " events/s"),
            "-",
            "-",
        ),
        ("chain verification", _n(result.verification.get("events_per_s"), " events/s"), "-", "-"),
        (
            f"inclusion proof p99 at {result.proofs.get('tree_size', 0):,} events",
            f"{_ms(result.proofs.get('latency', {}).get('p99_ms'))} ms",
            "-",
            "-",
        ),
        (
            "API memory (RSS), start → end",
            f"{mem['start']['api_mib']:,.0f} → {mem['end']['api_mib']:,.0f} MiB" if mem else "-",
            "-",
            "-",
        ),
        (
            "worker memory (RSS), start → end",
            f"{mem['start']['worker_mib']:,.0f} → {mem['end']['worker_mib']:,.0f} MiB"
            if mem
            else "-",
            "-",
            "-",
        ),
    ]
    return rows


def _interpreter_sentence(machine: dict[str, Any]) -> str:
    # Reports written before the interpreter was recorded say nothing of it.
    interpreter = machine.get("interpreter")
    calibration = machine.get("calibration_ms", {})
    if not interpreter:
        return ""
    text = (
        f" The service and the generator ran on `{interpreter['executable']}` "
        f"(libpython {interpreter['libpython']}, {interpreter['compiler']})"
    )
    if "start" in calibration and "end" in calibration:
        text += (
            f"; the interpreter's calibration workload took {calibration['start']:g} ms of CPU "
            f"at the start and {calibration['end']:g} ms at the end (lower is faster; it "
            "compares interpreters and machines between runs, see "
            "`loadtests/bench/interpreter.py`)"
        )
    return text + "."


def render_report(result: BenchResult, plot_dir: str = "benchmark") -> str:
    """The markdown report of ``result``; plots are linked from ``plot_dir``."""
    m = result.machine
    c = result.config
    lines = [
        "# Benchmark report",
        "",
        f"Written by `{result.command}` on {result.started_at}, in {result.seconds:,.0f} s, on a "
        f"machine with {m['cpus']} CPUs and {m['memory_gib']} GiB of memory ({m['platform']}, "
        f"Python {m['python']}). The load generator ran on the same machine as the service "
        f"({c['api_workers']} API processes, one queue worker), PostgreSQL (fsync on) and Valkey "
        "(append-only file fsynced on every write)." + _interpreter_sentence(m),
        "",
        "## Summary",
        "",
        "| measure | result | goal | met |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {g} | {ok} |" for a, b, g, ok in summary_rows(result)),
        "",
        "## Single events, open loop",
        "",
        f"Each offered rate ran for {c['rate_seconds']:g} s, spread over {c['tenants']} tenants. "
        "Requests were sent on schedule whatever the answers, and latency is measured from the "
        "time a request was due, so a stall shows on every request it delayed. "
        f"{_connections_sentence(c)}",
        "",
        *_rate_table("offered events/s", "achieved events/s", result.single),
    ]
    lines += [
        "",
        f"![Latency and throughput of single events by offered rate]({plot_dir}/{PLOTS[0]})",
        "",
    ]
    if result.floor:
        lines += [
            "## HTTP floor",
            "",
            "The same requests, at the same pace, sent by the same client to a no-op ASGI app "
            "served as `auditkit serve` serves the service, with its options, sockets and "
            f"{c['api_workers']} processes: "
            "the body is read and a receipt-sized answer sent, nothing else. No service on this "
            "server, on this machine, can answer faster; the distance between the two tables "
            f"is the service's own work. Each rate ran for {c.get('floor_seconds', 0):g} s.",
            "",
            *_rate_table("offered requests/s", "achieved requests/s", result.floor),
            "",
        ]
    lines += _cpu_section(result, plot_dir)
    lines += [
        "## Throughput by path",
        "",
        f"The COPY ceiling wrote {result.ceiling.get('events', 0):,} events of one tenant "
        f"({result.ceiling.get('rows_per_event', 0):.2f} rows each: the event, its index row and "
        "its Merkle nodes) in transactions of 20,000 events, then vacuumed, analysed and "
        "checkpointed them, so that no autovacuum or checkpoint of the load runs during "
        f"a later phase.{_quiet(result)}{_settled(result)} Batch ingest ran "
        f"{c['batch_concurrency']} clients for {c['batch_seconds']:g} s. Queued mode accepted "
        f"for {c['queued_seconds']:g} s with the worker stopped, then one worker drained the "
        f"stream in {result.queued.get('drain_seconds', 0):,.1f} s.",
        "",
        f"![Events per second by path]({plot_dir}/{PLOTS[1]})",
        "",
        "## Queries",
        "",
        f"{c['query_samples']} requests of each kind against the tenant of "
        f"{result.ceiling.get('events', 0):,} events, one at a time, pages of 100. Every read "
        "is itself recorded as an audit event (`AUDIT_RECORD_ACCESS`), so each latency includes "
        "that commit.",
        "",
        "| query | p50 ms | p99 ms | rows (median) | errors |",
        "|---|---|---|---|---|",
    ]
    for q in [*result.queries, {**result.proofs, "kind": "inclusion proof"}]:
        if not q.get("latency"):
            continue
        lines.append(
            f"| {q['kind']} | {_ms(q['latency']['p50_ms'])} | {_ms(q['latency']['p99_ms'])} "
            f"| {q.get('rows_median', 0):,.0f} | {q['errors']} |"
        )
    lines += [
        "",
        f"![Query latency by kind]({plot_dir}/{PLOTS[2]})",
        "",
        f"The numbers behind this page are in [benchmark.json]({plot_dir}/benchmark.json).",
        "",
    ]
    return "\n".join(lines)


def plot(result: BenchResult, plot_dir: Path) -> None:
    """Draw the three plots of the report into ``plot_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    offered = [p["offered_per_s"] for p in result.single]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        left.plot(offered, [p["latency"][key] for p in result.single], marker="o", label=label)
    left.axhline(100, color="grey", linestyle="--", linewidth=1, label="100 ms")
    left.set_yscale("log")
    left.set_xlabel("offered events/s")
    left.set_ylabel("latency from due time (ms)")
    left.set_title("Single-event latency, open loop")
    left.legend()
    right.plot(offered, offered, color="grey", linestyle="--", linewidth=1, label="offered")
    right.plot(offered, [p["achieved_per_s"] for p in result.single], marker="o", label="achieved")
    if result.floor:
        right.plot(
            [p["offered_per_s"] for p in result.floor],
            [p["achieved_per_s"] for p in result.floor],
            marker="s",
            linestyle=":",
            color="tab:grey",
            label="no-op app (HTTP floor)",
        )
    right.set_xlabel("offered events/s")
    right.set_ylabel("events/s")
    right.set_title("Single-event throughput")
    right.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / PLOTS[0], dpi=110)
    plt.close(fig)

    best = max((p["achieved_per_s"] for p in result.single), default=0.0)
    bars = [
        ("COPY ceiling", result.ceiling.get("events_per_s", 0.0)),
        ("batch (HTTP)", result.batch.get("events_per_s", 0.0)),
        ("HTTP floor (no-op)", floor_rate(result) or 0.0),
        ("single (HTTP)", best),
        ("queued accept", result.queued.get("accept_per_s", 0.0)),
        ("queued drain", result.queued.get("drain_per_s", 0.0)),
        ("verification", result.verification.get("events_per_s", 0.0)),
    ]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="tab:blue")
    # A linear axis from zero, so that bar lengths compare as the rates do.
    ax.set_xlim(0, max((b[1] for b in bars), default=1.0) * 1.15 or 1.0)
    ax.set_xlabel("events/s")
    ax.set_title("Throughput by path")
    for i, (_, value) in enumerate(bars[::-1]):
        ax.text(value, i, f" {value:,.0f}", va="center")
    fig.tight_layout()
    fig.savefig(plot_dir / PLOTS[1], dpi=110)
    plt.close(fig)

    queries = [*result.queries]
    if result.proofs.get("latency"):
        queries.append({**result.proofs, "kind": "inclusion proof"})
    names = [q["kind"] for q in queries]
    fig, ax = plt.subplots(figsize=(9, 4))
    positions = range(len(names))
    ax.barh(
        [i + 0.2 for i in positions], [q["latency"]["p50_ms"] for q in queries], 0.4, label="p50"
    )
    ax.barh(
        [i - 0.2 for i in positions], [q["latency"]["p99_ms"] for q in queries], 0.4, label="p99"
    )
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(f"Query latency, {result.ceiling.get('events', 0):,} events stored")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / PLOTS[2], dpi=110)
    plt.close(fig)

    _plot_cpu(result, plot_dir / PLOTS[3], plt)


def _plot_cpu(result: BenchResult, path: Path, plt: Any) -> None:
    """Stacked bars: µs of CPU per event by part, for each rate and for batch ingest."""
    measured = [
        ("batch" if offered is None else f"{offered:,.0f}/s", cpu)
        for offered, _, cpu in _cpu_measured(result)
    ]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [name for name, _ in measured]
    bottom = [0.0] * len(measured)
    parts = [*CPU_PARTS, ("unattributed", "unattributed")]
    for key, label in parts:
        values = [
            _unattributed(cpu) if key == "unattributed" else cpu.get(key, 0.0)
            for _, cpu in measured
        ]
        ax.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    budget = result.machine.get("cpus", 2) * 1e6 / GOALS["single_events_per_s"]
    ax.axhline(budget, color="grey", linestyle="--", linewidth=1)
    ax.text(
        len(names) - 0.5,
        budget,
        f"{GOALS['single_events_per_s']:,.0f} events/s on {result.machine.get('cpus', 2)} cores",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set_ylabel("µs of CPU per event")
    ax.set_xlabel("single events by offered rate, and batch ingest")
    ax.set_title("Where the CPU goes")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: BenchResult, out_dir: Path) -> Path:
    """Write `benchmark.md`, `benchmark/benchmark.json` and the plots; return the report."""
    plot_dir = out_dir / "benchmark"
    plot_dir.mkdir(parents=True, exist_ok=True)
    (plot_dir / "benchmark.json").write_text(result.to_json(), encoding="utf-8")
    plot(result, plot_dir)
    report = out_dir / "benchmark.md"
    report.write_text(render_report(result), encoding="utf-8")
    return report
