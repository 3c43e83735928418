"""Every load drill in its short form, as its own Locust process, against one stack.

This checks the drills, not the service's speed: each run must write its CSV files and HTML
report, and its exit code must be the thresholds' verdict on what Locust recorded (the
`quitting` listener's job). Whether the service met the bounds on this machine is the
drill's answer, not the test's.
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.bench.stack import BenchStack, TenantKey
from loadtests.drill import DRILLS, locust_command
from loadtests.thresholds import Observed, evaluate

pytestmark = [pytest.mark.load, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BenchStack, list[TenantKey]]]:
    """One service for every drill of this module (two API processes, a worker)."""
    bench = BenchStack(tmp_path_factory.mktemp("drills"), api_workers=2)
    try:
        bench.start()
        bench.start_worker()
        keys = bench.tenants([f"drill-{i}" for i in range(8)], keys_each=2)
        yield bench, keys
    finally:
        bench.close()


def _observed(stats_csv: Path) -> dict[str, Observed]:
    out = {}
    with stats_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["Name"] == "Aggregated":
                continue
            out[row["Name"]] = Observed(
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p95_ms=float(row["95%"] if row["95%"] != "N/A" else 0),
                p99_ms=float(row["99%"] if row["99%"] != "N/A" else 0),
            )
    return out


@pytest.mark.parametrize("name", sorted(DRILLS))
def test_drill_runs_and_its_exit_code_is_the_thresholds_verdict(
    name: str, stack: tuple[BenchStack, list[TenantKey]], tmp_path: Path
) -> None:
    bench, keys = stack
    command, _ = locust_command(name, bench.api_url, tmp_path, short=True)
    env = {**os.environ, "AUDITKIT_LOAD_API_KEYS": ",".join(k.key for k in keys)}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    output = done.stdout + done.stderr
    assert (tmp_path / f"{name}_stats.csv").is_file(), output[-3000:]
    assert (tmp_path / f"{name}.html").read_text(encoding="utf-8").lstrip().startswith("<!")
    observed = _observed(tmp_path / f"{name}_stats.csv")
    assert sum(o.requests for o in observed.values()) > 0, output[-3000:]
    failed = [line for line in output.splitlines() if line.startswith("THRESHOLD FAILED")]
    assert done.returncode == (1 if failed else 0), output[-3000:]
    assert failed or "THRESHOLDS MET" in output
    if name != "soak":  # the soak also judges memory samples, which the CSV does not hold
        expected = evaluate([name], observed)
        assert [line.removeprefix("THRESHOLD FAILED ") for line in failed] == expected
