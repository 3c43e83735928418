"""Where the CPU of a measurement went: each part of the stack, the load generator, the machine.

On a machine whose cores the service shares with its database, its queue and the load
generator, a rate is bounded by the CPU one request costs all of them together: two cores
serve at most 2,000,000 µs / (µs per request) requests a second, whatever the latency. So
every open-loop rate and the batch phase record the CPU time (user + system) each part
spent, divided by the requests or events it served:

- each service part is a process tree (`auditkit serve` with its API processes,
  PostgreSQL's postmaster with its backends, Valkey, the queue worker);
- `generator` is the benchmark's own process, the load generator;
- `machine` is every core's busy time (`psutil.cpu_times`: all but idle and I/O wait), so
  `machine` minus the parts is what no part was charged for: the kernel's network
  processing in interrupt context, processes that ended during the measurement (PostgreSQL's
  autovacuum workers), everything else on the machine.

psutil is used rather than `/proc` parsing of our own: it reads the same counters and works
wherever the harness runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil

from loadtests.bench.stack import process_tree

__all__ = ["CpuMeter", "busy_seconds", "tree_cpu_seconds", "wait_until_quiet"]

Pid = Callable[[], int | None]


def tree_cpu_seconds(pid: int | None, *, children: bool = True) -> dict[int, float]:
    """CPU seconds (user + system) of a process and, by default, its descendants, by pid.

    Processes that end while they are read are left out; an absent root gives `{}`.
    """
    if pid is None:
        return {}
    if children:
        procs = process_tree(pid)
    else:
        try:
            procs = [psutil.Process(pid)]
        except psutil.NoSuchProcess:
            return {}
    seconds: dict[int, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def busy_seconds() -> float:
    """Busy CPU seconds of every core since boot (all but idle and I/O wait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def wait_until_quiet(
    cores: float = 0.2, *, window_s: float = 1.0, timeout_s: float = 60.0
) -> tuple[float, float]:
    """Wait until the machine's cores are busy less than ``cores`` over a ``window_s``.

    After writing a million events the machine is not at rest: the kernel writes back
    dirty pages and PostgreSQL's background processes work on, and a rate measured
    meanwhile shares the cores with them (0.5 cores unaccounted for at 250 events/s in one
    run). Returns the seconds waited and the busy cores of the last window; gives up after
    ``timeout_s`` (the measurement then says how busy the machine still was).
    """
    started = time.monotonic()
    while True:
        before = busy_seconds()
        await asyncio.sleep(window_s)
        busy = (busy_seconds() - before) / window_s
        waited = time.monotonic() - started
        if busy < cores or waited >= timeout_s:
            return round(waited, 1), round(busy, 2)


@dataclass
class CpuMeter:
    """CPU each part spends between `start` and `stop`.

    Args:
        parts: Name → a function giving the root pid of that part now (`None` when it does
            not run). Roots are looked up at both ends, so a part restarted in between
            counts from zero.

    A process alive at both ends counts what it spent in between; one that started in
    between counts all it spent; one that ended in between is lost to its part (and shows
    in `machine`).
    """

    parts: Mapping[str, Pid]
    _before: dict[str, dict[int, float]] = field(default_factory=dict)
    _busy_before: float = 0.0
    _spent: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        """Take the first reading."""
        self._before = self._read()
        self._busy_before = busy_seconds()

    def stop(self) -> dict[str, float]:
        """Take the second reading; returns CPU seconds by part, `generator` and `machine`."""
        after = self._read()
        spent = {}
        for name, now in after.items():
            before = self._before.get(name, {})
            spent[name] = sum(max(0.0, s - before.get(pid, 0.0)) for pid, s in now.items())
        spent["machine"] = max(0.0, busy_seconds() - self._busy_before)
        self._spent = spent
        return spent

    def per_unit(self, units: float) -> dict[str, float]:
        """Microseconds of CPU per unit (request or event) by part; `{}` for no units."""
        if units <= 0:
            return {}
        return {name: round(s * 1e6 / units, 1) for name, s in self._spent.items()}

    def _read(self) -> dict[str, dict[int, float]]:
        readings = {name: tree_cpu_seconds(pid()) for name, pid in self.parts.items()}
        readings["generator"] = tree_cpu_seconds(os.getpid(), children=False)
        return readings
