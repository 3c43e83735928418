"""The burst drill's question without Locust: N events at once, when does the last answer come?

    uv run python -m loadtests.bench.burst [--rounds 10] [--events 5000] [--batches 10]
        [--setting NAME=VALUE ...] [--out DIR]

Starts the benchmark's servers (`BenchStack`: PostgreSQL, Valkey, `auditkit serve` with two
processes), builds every batch, opens one connection per batch and then writes them all at
once, `--rounds` times, a few seconds apart. For each burst it prints when the first and the
last answer came back (counted from the moment the writes began), the median, and the CPU
the API processes, PostgreSQL and this client spent on it. Then it counts the stored events:
a burst answered with anything but `201`, or whose events are not all stored, fails the run
(exit 1).

It also prints each burst's **CPU floor**: the CPU the service spent on the burst (its API
processes and PostgreSQL; not the client, not the kernel's work charged to no process),
divided by the machine's cores. However that work is scheduled, the cores cannot finish it
sooner, so a floor above the drill's bound says the bound is out of reach of this code on
this machine, not of a better schedule. The cores kept busy (the whole machine's CPU over
the time to the last answer) say how far the schedule is from perfect.

The Locust drill (`python -m loadtests.drill burst`) is the acceptance check. This is the
instrument for changing what it measures: no Locust users share the cores, the batches are
built before the clock starts, and many bursts on one stack show the spread. `--setting`
passes `AUDIT_*` settings to the service, e.g. `--setting GROUP_COMMIT_LINGER_MS=0`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from loadtests.bench.cpu import CpuMeter
from loadtests.bench.http import HttpTarget, collector_paused, request_bytes
from loadtests.bench.stack import BenchStack, TenantKey
from loadtests.scenarios.events import EventFactory
from loadtests.thresholds import THRESHOLDS

__all__ = [
    "Burst",
    "cpu_floor_ms",
    "floor_summary",
    "main",
    "read_status",
    "run_bursts",
    "send_together",
    "verdict",
]

TENANT = "burst"
WARM_UP_EVENTS = 50  # per batch of the first, unmeasured burst
# The drill's bound on the burst: the design's 200 ms.
BOUND_MS = THRESHOLDS["burst"][0].p99_ms or 200.0


@dataclass(frozen=True)
class Burst:
    """What one burst measured."""

    first_ms: float
    median_ms: float
    last_ms: float
    statuses: tuple[int, ...]
    cpu_ms: dict[str, float]
    machine_ms: float = 0.0

    def floor_ms(self, cores: int) -> float:
        """The service's CPU on this burst over ``cores``: no schedule answers sooner."""
        return cpu_floor_ms(self.cpu_ms["api"] + self.cpu_ms["postgres"], cores)

    def cores_busy(self) -> float:
        """Cores kept busy, on average, from the first write to the last answer."""
        return self.machine_ms / self.last_ms if self.last_ms > 0 else 0.0


def cpu_floor_ms(cpu_ms: float, cores: int) -> float:
    """The least wall time in which ``cores`` can spend ``cpu_ms`` of CPU.

    Raises:
        ValueError: ``cores`` is not positive.
    """
    if cores < 1:
        raise ValueError("cores must be at least 1")
    return cpu_ms / cores


def floor_summary(bursts: Sequence[Burst], cores: int, bound_ms: float = BOUND_MS) -> str:
    """One sentence: the bursts' CPU floors and how many of them are within ``bound_ms``."""
    floors = sorted(b.floor_ms(cores) for b in bursts)
    within = sum(f <= bound_ms for f in floors)
    return (
        f"CPU floor (the service's CPU over {cores} cores): {floors[0]:.0f} to "
        f"{floors[-1]:.0f} ms, median {statistics.median(floors):.0f} ms; "
        f"{within} of {len(floors)} bursts within {bound_ms:.0f} ms"
    )


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (its body by `Content-Length`); return its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


async def send_together(target: HttpTarget, requests: Sequence[bytes]) -> list[tuple[float, int]]:
    """Open a connection per request, then write them all at once.

    Returns ``(seconds from the first write to the answer, status)`` for each request.
    """
    streams = [await asyncio.open_connection(target.host, target.port) for _ in requests]
    started = time.perf_counter()

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[float, int]:
        writer.write(request)
        await writer.drain()
        status = await read_status(reader)
        return time.perf_counter() - started, status

    try:
        return await asyncio.gather(
            *(one(r, w, req) for (r, w), req in zip(streams, requests, strict=True))
        )
    finally:
        for _, writer in streams:
            writer.close()


def verdict(expected: int, stored: int, bursts: Sequence[Burst]) -> list[str]:
    """What went wrong, if anything: statuses other than 201, events not stored."""
    problems = []
    others = sorted({s for b in bursts for s in b.statuses if s != 201})
    if others:
        problems.append(f"answers other than 201: {others}")
    if stored != expected:
        problems.append(f"{expected} events sent, {stored} stored")
    return problems


async def run_bursts(
    stack: BenchStack, key: TenantKey, rounds: int, events: int, batches: int, pause_s: float
) -> list[Burst]:
    """One unmeasured burst of small batches, then ``rounds`` bursts of ``events``."""
    target = HttpTarget.from_url(stack.api_url)
    headers = {"Authorization": f"Bearer {key.key}", "Content-Type": "application/json"}
    factory = EventFactory(seed=11)

    def requests(size: int) -> list[bytes]:
        return [
            request_bytes(
                "POST", "/v1/events:batch", target.host, headers, factory.batch_body(size)
            )
            for _ in range(batches)
        ]

    await send_together(target, requests(WARM_UP_EVENTS))
    out = []
    for _ in range(rounds):
        await asyncio.sleep(pause_s)
        prepared = requests(events // batches)
        meter = CpuMeter(stack.cpu_parts())
        with collector_paused():  # its collections stay outside the measurement
            meter.start()
            answers = await send_together(target, prepared)
            spent = meter.stop()
        times = sorted(1000 * t for t, _ in answers)
        out.append(
            Burst(
                first_ms=times[0],
                median_ms=statistics.median(times),
                last_ms=times[-1],
                statuses=tuple(s for _, s in answers),
                cpu_ms={part: 1000 * spent.get(part, 0.0) for part in ("api", "postgres")}
                | {"client": 1000 * spent.get("generator", 0.0)},
                machine_ms=1000 * spent.get("machine", 0.0),
            )
        )
    return out


async def _stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM audit_events WHERE tenant_id = $1", TENANT)
        )
    finally:
        await conn.close()


def _table(bursts: Sequence[Burst], cores: int) -> Table:
    table = Table(
        box=None,  # columns apart by their padding alone: ten of them fit 80 characters
        title="bursts (ms)",
    )
    for name in ("burst", "first", "median", "last", "API", "PostgreSQL", "client", "machine"):
        table.add_column(name, justify="right")
    for name in ("floor", "busy"):
        table.add_column(name, justify="right", style="bold")
    for i, b in enumerate(bursts, 1):
        cpu = b.cpu_ms
        table.add_row(
            str(i),
            *(f"{v:.0f}" for v in (b.first_ms, b.median_ms, b.last_ms)),
            *(f"{cpu[p]:.0f}" for p in ("api", "postgres", "client")),
            f"{b.machine_ms:.0f}",
            f"{b.floor_ms(cores):.0f}",
            f"{b.cores_busy():.2f}",
        )
    return table


# What the table's columns are, printed under it.
LEGEND = (
    "first, median, last: answers, from the first write. API, PostgreSQL, client, machine: "
    "CPU spent on the burst. floor: the service's CPU (API + PostgreSQL) over the cores. "
    "busy: the machine's CPU over the time to the last answer, in cores."
)


def main(argv: list[str] | None = None) -> int:
    """Run the bursts; 0 when every answer was 201 and every event is stored."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--events", type=int, default=5000, help="events per burst")
    parser.add_argument("--batches", type=int, default=10, help="requests per burst")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between bursts")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=Path(".auditkit/burst"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batches < 1 or args.events < args.batches or args.pause < 0:
        parser.error("--rounds and --batches at least 1, --events at least --batches")
    if any("=" not in pair for pair in args.setting):
        parser.error("--setting takes NAME=VALUE")
    settings = dict(pair.split("=", 1) for pair in args.setting)
    console = Console()
    stack = BenchStack(args.out, settings=settings)
    try:
        with console.status("starting PostgreSQL, Valkey and the service"):
            stack.start()
        [key] = stack.tenants([TENANT])
        with console.status(f"{args.rounds} bursts of {args.events} events"):
            bursts = asyncio.run(
                run_bursts(stack, key, args.rounds, args.events, args.batches, args.pause)
            )
        stored = asyncio.run(_stored(stack.database_url))
    finally:
        stack.close()
    cores = os.cpu_count() or 1
    console.print(_table(bursts, cores))
    console.print(LEGEND)
    lasts = sorted(b.last_ms for b in bursts)
    console.print(
        f"last answer: {lasts[0]:.0f} to {lasts[-1]:.0f} ms, "
        f"median {statistics.median(lasts):.0f} ms over {len(bursts)} bursts"
    )
    console.print(floor_summary(bursts, cores))
    sent = args.batches * (WARM_UP_EVENTS + args.rounds * (args.events // args.batches))
    problems = verdict(sent, stored, bursts)
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
