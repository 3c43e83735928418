"""Run one load drill headless: `python -m loadtests.drill NAME [--out DIR] [--host URL]`.

Without `--host`, the drill starts its own PostgreSQL, Valkey and service (as
`auditkit bench` does), creates tenants with API keys, and stops everything afterwards; the
machine's own servers are never touched. With `--host`, it sends load to a running service
and takes the keys from `AUDITKIT_LOAD_API_KEYS`.

Locust runs as its own process, with the drill's users, spawn rate and duration; its CSV
files and HTML report go to `--out` (default `.auditkit/loadtests`), and its exit code, set
by the thresholds of `loadtests/thresholds.py`, is the drill's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.stack import BenchStack

__all__ = ["DRILLS", "SHORT", "Drill", "Short", "locust_command", "main", "run_drill"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@dataclass(frozen=True)
class Drill:
    """How Locust runs one drill.

    Attributes:
        users: Locust users (the soak adds its memory sampler).
        spawn_rate: Users started per second.
        seconds: Length of the run.
        classes: User classes of the scenario.
        options: Scenario options (`--target-rate`, ...).
        api_workers: API processes when the drill starts its own service.
    """

    users: int
    spawn_rate: float
    seconds: int
    classes: tuple[str, ...]
    options: tuple[str, ...] = ()
    api_workers: int = 2


@dataclass(frozen=True)
class Short:
    """The short form of a drill, for the test suite: seconds, not minutes."""

    seconds: int
    users: int | None = None
    rate: str | None = None
    every: str | None = None


# --8<-- [start:drills]
DRILLS: dict[str, Drill] = {
    "sustained": Drill(100, 100, 120, ("SustainedIngest",), ("--target-rate", "1000")),
    "burst": Drill(10, 10, 15, ("BurstIngest",), ("--burst-events", "5000")),
    "batch": Drill(8, 8, 120, ("BatchIngest",), ("--batch-size", "100")),
    "queries": Drill(20, 20, 120, ("QueryMix",)),
    "stress": Drill(10_000, 2_500, 60, ("DatabaseStress",)),
    "soak": Drill(
        21,
        21,
        1800,
        ("SoakIngest", "MemorySampler"),
        ("--target-rate", "200", "--sample-every", "10"),
        api_workers=1,
    ),
}
# --8<-- [end:drills]

# The short form the test suite runs: same users and thresholds where the machine allows,
# a few seconds long; the stress drill with fewer users.
SHORT: dict[str, Short] = {
    "sustained": Short(8, users=20, rate="200"),
    "burst": Short(6),
    "batch": Short(6, users=2),
    "queries": Short(6, users=4),
    "stress": Short(12, users=300),
    "soak": Short(12, users=5, rate="50", every="1"),
}


def locust_command(
    name: str, host: str, out: Path, *, short: bool = False, seconds: int | None = None
) -> tuple[list[str], Drill]:
    """The `locust` command line of drill ``name`` against ``host``, writing into ``out``.

    ``seconds`` overrides the drill's length (a longer soak, a shorter rehearsal).
    """
    drill = DRILLS[name]
    users, spawn = drill.users, drill.spawn_rate
    seconds = seconds or drill.seconds
    options = list(drill.options)
    if short:
        tweak = SHORT[name]
        seconds = tweak.seconds
        if tweak.users is not None:
            users, spawn = tweak.users, float(tweak.users)  # every user at once, as in full
        if tweak.rate is not None:
            options[options.index("--target-rate") + 1] = tweak.rate
        if tweak.every is not None:
            options[options.index("--sample-every") + 1] = tweak.every
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn:g}",
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "30",
        "--host",
        host,
        "--csv",
        str(out / name),
        "--html",
        str(out / f"{name}.html"),
        "--loglevel",
        "WARNING",
        "--only-summary",
        *options,
        *drill.classes,
    ]
    return command, drill


def run_drill(
    name: str,
    out: Path,
    *,
    host: str | None = None,
    short: bool = False,
    seconds: int | None = None,
) -> int:
    """Run drill ``name``; returns Locust's exit code (0: every threshold met)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    stack: BenchStack | None = None
    try:
        if host is None:
            drill = DRILLS[name]
            work = Path(tempfile.mkdtemp(prefix=f"auditkit-drill-{name}-"))
            stack = BenchStack(work, api_workers=drill.api_workers)
            stack.start()
            keys = stack.tenants([f"load-{name}-{i}" for i in range(8)], keys_each=2)
            host = stack.api_url
            env["AUDITKIT_LOAD_API_KEYS"] = ",".join(k.key for k in keys)
        command, _ = locust_command(name, host, out, short=short, seconds=seconds)
        print(f"drill {name}: {' '.join(command[2:])}", flush=True)
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        if stack is not None:
            stack.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.drill NAME`."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.drill", description=__doc__)
    parser.add_argument("name", choices=sorted(DRILLS))
    parser.add_argument("--out", type=Path, default=Path(".auditkit/loadtests"))
    parser.add_argument("--host", help="a running service (keys in AUDITKIT_LOAD_API_KEYS)")
    parser.add_argument("--short", action="store_true", help="the test suite's short form")
    parser.add_argument("--seconds", type=int, help="run this long instead of the drill's own")
    args = parser.parse_args(argv)
    return run_drill(args.name, args.out, host=args.host, short=args.short, seconds=args.seconds)


if __name__ == "__main__":
    sys.exit(main())
