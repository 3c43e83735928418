"""One benchmark run: start the stack, run every phase in order, write JSON and the report.

The order matters and is fixed, so that runs compare:

1. the COPY ceiling, which also builds the large tenant (N events, verifiable);
2. single-event ingest over HTTP at each offered rate, open loop;
3. batch ingest over HTTP, closed loop, against the ceiling;
4. queued ingest: accept rate with the worker stopped, then the worker's drain rate;
5. verification of the large tenant's chain, and inclusion proofs in its tree;
6. queries of each filter kind against the large tenant;
7. resident memory of the API and the worker, sampled at the start and at the end.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import platform
import resource
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import uvloop

from loadtests.bench import phases
from loadtests.bench.bulk import build_log, settle
from loadtests.bench.cpu import wait_until_quiet
from loadtests.bench.floor import FloorServer
from loadtests.bench.http import OPEN_LOOP_CONNECTIONS
from loadtests.bench.interpreter import calibration_ms, describe
from loadtests.bench.stack import BenchStack
from reference_impl.integrity import KeyRing

__all__ = ["BenchConfig", "BenchResult", "Reporter", "SilentReporter", "run_benchmark"]

BULK_TENANT = "bench-log"


# --8<-- [start:config]
@dataclass(frozen=True)
class BenchConfig:
    """Sizes and durations of a run (`auditkit bench --help` names each flag).

    Attributes:
        events: Events of the large tenant (COPY ceiling, proofs, queries, verification).
        rates: Offered single-event rates (events/s), open loop, lowest first.
        rate_seconds: Seconds of load at each rate.
        connections: Most connections the open-loop client opens (single events and the
            HTTP floor): the population of clients (`loadtests.bench.http`).
        batch_size: Events per batch request.
        batch_concurrency: Batch requests in flight at once.
        batch_seconds: Seconds of batch load.
        queued_seconds: Seconds of queued-mode load (worker stopped).
        query_samples: Requests per query kind (and inclusion proofs).
        floor_rates: Offered rates (requests/s) of the HTTP floor, open loop, lowest first.
        floor_seconds: Seconds of load at each floor rate.
        api_workers: Processes of `auditkit serve --workers`.
        tenants: Tenants the ingest load spreads over (one API key each).
        latency_goal_ms: The p99 a rate must keep to count as sustained.
    """

    events: int = 1_000_000
    # Past the 5,000 goal, so that the sweep finds the ceiling of a machine that meets it.
    rates: tuple[float, ...] = (250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000)
    rate_seconds: float = 15.0
    connections: int = OPEN_LOOP_CONNECTIONS
    batch_size: int = 500
    batch_concurrency: int = 4
    batch_seconds: float = 20.0
    queued_seconds: float = 10.0
    query_samples: int = 200
    floor_rates: tuple[float, ...] = (2000, 4000, 6000, 8000, 10000, 12000, 16000)
    floor_seconds: float = 5.0
    api_workers: int = 2
    tenants: int = 8
    latency_goal_ms: float = 100.0

    @classmethod
    def quick(cls) -> BenchConfig:
        """A smoke run of every phase in well under two minutes (not a measurement)."""
        return cls(
            events=20_000,
            rates=(200.0, 400.0),
            rate_seconds=3.0,
            batch_size=200,
            batch_concurrency=2,
            batch_seconds=4.0,
            queued_seconds=3.0,
            query_samples=20,
            floor_rates=(500.0, 1000.0),
            floor_seconds=2.0,
            tenants=4,
        )


# --8<-- [end:config]


@dataclass
class BenchResult:
    """Everything a run measured (the JSON report)."""

    command: str
    started_at: str
    machine: dict[str, Any]
    config: dict[str, Any]
    ceiling: dict[str, Any] = field(default_factory=dict)
    single: list[dict[str, Any]] = field(default_factory=list)
    sustained_rate_per_s: float | None = None
    floor: list[dict[str, Any]] = field(default_factory=list)
    batch: dict[str, Any] = field(default_factory=dict)
    queued: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    proofs: dict[str, Any] = field(default_factory=dict)
    queries: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> str:
        """The JSON report."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        """Read a JSON report back."""
        return cls(**json.loads(text))


class Reporter(Protocol):
    """What a run tells whoever watches it; the command draws it as rich progress."""

    def phase(self, name: str, total: float | None = None) -> None:
        """A phase starts (``total`` units of progress, when known)."""

    def advance(self, done: float, detail: str = "") -> None:
        """Progress within the current phase."""

    def done(self, name: str, summary: str) -> None:
        """A phase ended with this one-line summary."""


class SilentReporter:
    """A reporter that tells no one (tests, scripts)."""

    def phase(self, name: str, total: float | None = None) -> None:
        """Ignored."""

    def advance(self, done: float, detail: str = "") -> None:
        """Ignored."""

    def done(self, name: str, summary: str) -> None:
        """Ignored."""


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "interpreter": asdict(describe()),
        "calibration_ms": {"start": calibration_ms()},
    }


def sustained_rate(points: list[dict[str, Any]], goal_ms: float) -> float | None:
    """The highest offered rate that was achieved (within 5 %) with p99 under ``goal_ms``."""
    ok = [
        p["offered_per_s"]
        for p in points
        if p["latency"]["p99_ms"] < goal_ms
        and p["achieved_per_s"] >= 0.95 * p["offered_per_s"]
        and p["errors"] == 0
        and p["unanswered"] == 0
    ]
    return max(ok) if ok else None


async def _run(
    stack: BenchStack, config: BenchConfig, result: BenchResult, reporter: Reporter
) -> None:
    settings = stack.settings()
    keyring = KeyRing(settings.signing_secrets, settings.active_signing_key)
    pepper = base64.b64decode(settings.api_key_pepper.get_secret_value())
    stack.start_worker()
    await asyncio.sleep(3.0)  # the worker's imports and connections, so "start" is at rest
    start_memory = phases.memory(stack)

    reporter.phase("COPY ceiling", config.events)
    bulk = await build_log(
        stack.database_url,
        BULK_TENANT,
        config.events,
        keyring,
        pepper,
        progress=lambda n: reporter.advance(n),
    )
    result.ceiling = {
        "events": bulk.events,
        "copy_seconds": round(bulk.copy_seconds, 2),
        "events_per_s": round(bulk.events_per_s, 1),
        "rows_per_event": round(bulk.rows_per_event, 2),
        "prepare_seconds": round(bulk.prepare_seconds, 2),
    }
    reporter.done("COPY ceiling", f"{bulk.events_per_s:,.0f} events/s")

    keys = await stack.create_tenants([f"bench-{i}" for i in range(config.tenants)])
    log_keys = await stack.create_tenants([BULK_TENANT], keys_each=4)
    reporter.phase("waiting for the machine to go quiet", None)
    waited, busy = await wait_until_quiet()
    result.ceiling["quiet"] = {"waited_s": waited, "busy_cores": busy}
    reporter.done("waiting for the machine to go quiet", f"{waited:g} s, {busy:.2f} cores busy")

    points = await _rate_phase(
        reporter,
        "single events (open loop)",
        config.rates,
        config.rate_seconds,
        functools.partial(
            phases.single_event_sweep,
            stack,
            keys,
            config.rates,
            config.rate_seconds,
            connections=config.connections,
        ),
    )
    result.single = [asdict(p) for p in points]
    result.sustained_rate_per_s = sustained_rate(result.single, config.latency_goal_ms)
    best = max((p.achieved_per_s for p in points), default=0.0)
    reporter.done("single events (open loop)", f"up to {best:,.0f} events/s")

    floor = FloorServer(config.api_workers, stack.log_dir)
    try:
        floor.start()
        floor_points = await _rate_phase(
            reporter,
            "HTTP floor (no-op app)",
            config.floor_rates,
            config.floor_seconds,
            functools.partial(
                phases.http_floor,
                floor,
                keys,
                config.floor_rates,
                config.floor_seconds,
                connections=config.connections,
            ),
        )
    finally:
        floor.close()
    result.floor = [asdict(p) for p in floor_points]
    top = max((p.achieved_per_s for p in floor_points), default=0.0)
    reporter.done("HTTP floor (no-op app)", f"up to {top:,.0f} requests/s")

    reporter.phase("settling the database", None)
    settled_s = await _settle(stack)
    reporter.done("settling the database", f"{settled_s:.1f} s")

    reporter.phase("batch ingest", config.batch_seconds)
    started = time.perf_counter()
    batch = await phases.batch_ingest(
        stack,
        keys,
        batch_size=config.batch_size,
        concurrency=config.batch_concurrency,
        duration_s=config.batch_seconds,
        progress=lambda _: reporter.advance(time.perf_counter() - started),
    )
    ratio = batch.events_per_s / bulk.events_per_s if bulk.events_per_s else 0.0
    result.batch = {
        **asdict(batch),
        "batch_size": config.batch_size,
        "of_ceiling": round(ratio, 3),
        "settled_s": round(settled_s, 1),
    }
    reporter.done("batch ingest", f"{batch.events_per_s:,.0f} events/s ({ratio:.0%} of COPY)")

    reporter.phase("queued ingest", config.queued_seconds)
    started = time.perf_counter()
    queued = await phases.queued_ingest(
        stack,
        keys,
        duration_s=config.queued_seconds,
        concurrency=64,
        progress=lambda _: reporter.advance(time.perf_counter() - started),
    )
    result.queued = asdict(queued)
    reporter.done(
        "queued ingest",
        f"accept {queued.accept_per_s:,.0f}/s, drain {queued.drain_per_s:,.0f}/s",
    )

    reporter.phase("verification", None)
    verified = await phases.verification(stack, BULK_TENANT)
    result.verification = {**asdict(verified), "events_per_s": round(verified.events_per_s, 1)}
    reporter.done("verification", f"{verified.events_per_s:,.0f} events/s, valid={verified.valid}")
    reporter.phase("inclusion proofs", config.query_samples)
    ids = bulk.sample_ids
    chosen = [ids[(i * 7919) % len(ids)] for i in range(config.query_samples)]
    proofs = await phases.proof_latency(
        stack, log_keys, chosen, bulk.events, progress=lambda n: reporter.advance(n)
    )
    result.proofs = {**asdict(proofs), "tree_size": bulk.events}
    reporter.done("inclusion proofs", f"p99 {proofs.latency.p99_ms:.1f} ms")

    kinds = len(phases.query_paths(1))
    reporter.phase("queries", kinds * config.query_samples)
    kind_index = 0

    def on_kind(kind: str) -> None:
        nonlocal kind_index
        reporter.advance(kind_index * config.query_samples, kind)
        kind_index += 1

    found = await phases.queries(
        stack,
        log_keys,
        config.query_samples,
        on_kind=on_kind,
        progress=lambda n: reporter.advance((kind_index - 1) * config.query_samples + n),
    )
    result.queries = [asdict(q) for q in found]
    worst = max((q.latency.p99_ms for q in found), default=0.0)
    reporter.done("queries", f"worst p99 {worst:.1f} ms")

    end_memory = phases.memory(stack)
    result.memory = {"start": asdict(start_memory), "end": asdict(end_memory)}


async def _settle(stack: BenchStack) -> float:
    """Vacuum, analyse and checkpoint what the single-event phases wrote; seconds taken.

    The sweep writes some 350,000 events: enough for PostgreSQL to start an autovacuum of
    the events table (a fifth more rows than at its last vacuum) and a checkpoint, at
    moments of its choosing. Seen with `ps` beside a run, one such autovacuum worked through
    the batch phase that followed, and batches reached 48 % of the `COPY` ceiling against
    57 % to 64 % in the runs before; as after the bulk load, that work is done here, between
    phases, and its length is reported.
    """
    import asyncpg  # type: ignore[import-untyped]

    started = time.perf_counter()
    conn = await asyncpg.connect(stack.database_url)
    try:
        await settle(conn)
    finally:
        await conn.close()
    await wait_until_quiet()
    return time.perf_counter() - started


async def _rate_phase(
    reporter: Reporter,
    name: str,
    rates: tuple[float, ...],
    seconds: float,
    sweep: Callable[..., Awaitable[list[phases.RatePoint]]],
) -> list[phases.RatePoint]:
    """Run an open-loop sweep as one phase whose progress counts requests over all rates."""
    reporter.phase(name, sum(r * seconds for r in rates))
    offset = 0.0

    def on_rate(rate: float) -> None:
        nonlocal offset
        offset = sum(r * seconds for r in rates if r < rate)
        reporter.advance(offset, f"{rate:g}/s offered")

    return await sweep(on_rate=on_rate, progress=lambda n: reporter.advance(offset + n))


def _allow_open_files(connections: int) -> None:
    """Raise this process's open-file limit (its servers inherit it) to fit the client.

    A common soft limit is 1,024 descriptors, fewer than the client's connections and the
    files of the run; the hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * 2 + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        # The hard limit is never below the soft one, so this never lowers it.
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def run_benchmark(
    config: BenchConfig,
    out_dir: Path,
    command: str,
    *,
    work_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> BenchResult:
    """Run the benchmark on servers it starts; write `benchmark.json`, the report, plots.

    Args:
        config: Sizes and durations.
        out_dir: Where `benchmark.md` goes; its data and plots go to `out_dir/benchmark/`.
        command: The command line that ran it (printed in the report).
        work_dir: Where server and service logs go (default `.auditkit/bench/work`).
        reporter: Receives progress.
    """
    from loadtests.bench.report import write_report

    reporter = reporter or SilentReporter()
    work = work_dir or Path(".auditkit/bench/work")
    result = BenchResult(
        command=command,
        started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=_machine(),
        config=asdict(config),
    )
    began = time.perf_counter()
    _allow_open_files(config.connections)
    reporter.phase("starting servers and the service", None)
    stack = BenchStack(work, api_workers=config.api_workers)
    try:
        stack.start()
        reporter.done("starting servers and the service", "ready")
        # The load generator runs on uvloop, as the service does: it shares the cores it
        # measures, and spent 62-72 against 71-81 µs of CPU per request on asyncio's loop.
        uvloop.run(_run(stack, config, result, reporter))
    finally:
        stack.close()
    result.machine["calibration_ms"]["end"] = calibration_ms()
    result.seconds = round(time.perf_counter() - began, 1)
    write_report(result, out_dir)
    return result


def command_line(argv: list[str]) -> str:
    """The command as a person types it."""
    return shlex.join(["auditkit", "bench", *argv])
