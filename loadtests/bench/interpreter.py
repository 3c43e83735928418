"""Which Python a run measured, and how fast that Python is on this machine right now.

The service spends most of its CPU in the interpreter, and CPython builds of the same
version differ: a build with profile-guided and link-time optimisation and libpython linked
into the executable (as Linux distributions and the official container images build it) runs
the same code faster than a plain `-O3` build with a shared libpython (as pyenv builds it by
default). On the benchmark machine the API processes spent about a sixth less CPU per event
on the first kind (Testing Strategies, "The interpreter"). The service processes are started
with the bench's own interpreter, so describing this process describes theirs.

Machines also change speed from one minute to the next (a shared host). A fixed pure-Python
workload, timed when the run starts and when it ends, puts one number on interpreter and
machine together, so a reader can tell a slower run from a slower service. The workload is
timed here rather than with `pyperf`, whose calibrated runs take tens of seconds; the best of
a few short rounds is enough to compare runs.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Interpreter", "calibration_ms", "describe"]


@dataclass(frozen=True)
class Interpreter:
    """The running interpreter, as a report names it."""

    executable: str
    version: str
    libpython: str  # "shared", "static" or "unknown"
    compiler: str


def describe(maps: Path = Path("/proc/self/maps")) -> Interpreter:
    """The running interpreter: its file, version, and how libpython is linked."""
    return Interpreter(
        executable=str(Path(sys.executable).resolve()),
        version=platform.python_version(),
        libpython=_libpython(maps),
        compiler=platform.python_compiler(),
    )


def _libpython(maps: Path) -> str:
    # A shared libpython is a mapped file of its own; a static one is part of the executable.
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    return "shared" if "/libpython3" in text else "static"


class _Record:
    def __init__(self, key: int, name: str) -> None:
        self.key = key
        self.name = name
        self.tags = [name[:2], name[-2:]]


def _workload() -> int:
    # Objects, dicts, string formatting, calls and sorting: what a request costs the API.
    records = [_Record(i, f"event-{i:06d}") for i in range(20_000)]
    index = {r.name: r for r in records}
    total = 0
    for r in sorted(records, key=lambda r: (r.tags[1], -r.key)):
        total += len(index[r.name].tags[0]) + (r.key & 7)
    return total


def calibration_ms(rounds: int = 5) -> float:
    """CPU milliseconds of the fixed workload, best of ``rounds`` (lower is faster)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        _workload()
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)
