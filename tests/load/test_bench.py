"""`auditkit bench --quick` runs every phase of the harness end to end (a smoke test of the
harness, not of the service's speed: no timing is asserted), and the committed report is
the command's own output."""

from __future__ import annotations

import json
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import orjson
import pytest

from loadtests.bench.bulk import _prepared
from loadtests.bench.report import GOALS, PLOTS, cpu_rows, render_report, summary_rows
from loadtests.bench.run import BenchConfig, BenchResult, sustained_rate
from loadtests.scenarios.events import EventFactory
from reference_impl.core.settings import Settings
from reference_impl.events.validation import parse_event
from tests.docs.blocks import DOCS_DIR, REPO_ROOT, docs_block, run_bash_block
from tests.support.processes import auditkit

pytestmark = pytest.mark.load

GUIDE = "guides/testing-strategies.md"
COMMITTED = DOCS_DIR / "drills" / "benchmark.md"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_benchmark_runs_every_phase() -> None:
    out = REPO_ROOT / ".auditkit" / "bench"
    (out / "benchmark.md").unlink(missing_ok=True)
    done = run_bash_block(GUIDE, "ts-bench-quick", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = BenchResult.from_json((out / "benchmark" / "benchmark.json").read_text())
    assert (out / "benchmark.md").read_text(encoding="utf-8") == render_report(result)
    for name in PLOTS:
        assert (out / "benchmark" / name).read_bytes()[:8] == PNG
    quick = BenchConfig.quick()
    assert result.ceiling["events"] == quick.events and result.ceiling["events_per_s"] > 0
    assert result.ceiling["quiet"]["waited_s"] >= 1.0  # at least one window was sampled
    assert [p["offered_per_s"] for p in result.single] == list(quick.rates)
    assert all(p["latency"]["samples"] > 0 for p in result.single)
    # The quick rates need few connections: no request waited for one, and the report says
    # how many the client could open.
    assert result.config["connections"] == quick.connections
    assert all(p["waited"] == 0 for p in [*result.single, *result.floor])
    assert f"up to {quick.connections:,};" in (out / "benchmark.md").read_text(encoding="utf-8")
    # Each rate says where its CPU went: the API and PostgreSQL worked, and the machine's
    # busy time covers what the parts were charged.
    for cpu in [*(p["cpu_us"] for p in result.single), result.batch["cpu_us"]]:
        assert cpu["api"] > 0 and cpu["postgres"] > 0 and cpu["generator"] > 0
        assert cpu["machine"] >= 0.9 * (cpu["api"] + cpu["postgres"])
    assert all(p["cpu_us"]["server"] > 0 for p in result.floor)
    # The floor is measured with the same requests against the no-op app, all answered.
    assert [p["offered_per_s"] for p in result.floor] == list(quick.floor_rates)
    assert all(p["errors"] == 0 and p["latency"]["samples"] > 0 for p in result.floor)
    assert result.batch["requests"] > 0 and result.batch["errors"] == 0
    assert result.batch["settled_s"] > 0  # the sweep's rows were vacuumed before batches
    assert result.queued["accepted"] > 0 and result.queued["drain_per_s"] > 0
    # The log built with COPY is the one the service would have written: it verifies, and
    # its inclusion proofs are served.
    assert result.verification["valid"] is True
    assert result.verification["events"] >= quick.events
    assert result.proofs["errors"] == 0
    assert {q["kind"] for q in result.queries} >= {"principal", "subject", "export (subject)"}
    assert all(q["errors"] == 0 for q in result.queries)
    assert result.memory["end"]["api_mib"] > 0 and result.memory["end"]["worker_mib"] > 0
    # The report names the interpreter the service ran on, and its speed at both ends.
    interpreter = result.machine["interpreter"]
    assert Path(interpreter["executable"]).exists()
    assert interpreter["libpython"] in {"shared", "static"}
    assert set(result.machine["calibration_ms"]) == {"start", "end"}
    assert f"`{interpreter['executable']}` (libpython" in (out / "benchmark.md").read_text(
        encoding="utf-8"
    )


def test_bulk_events_are_what_validation_makes_of_them() -> None:
    factory = EventFactory(seed=11, with_ip=False)
    settings = Settings()
    for _ in range(50):
        prepared = _prepared(factory, None, _now())
        body = orjson.dumps(prepared.content)
        assert parse_event(body, settings).content == prepared.content
        assert prepared.event_id == UUID(prepared.content["event_id"])


def _now() -> datetime:
    return datetime.now(UTC)


def test_sustained_rate_is_the_highest_rate_kept_under_the_goal() -> None:
    points = [
        _rate_point(100, 100, p99=20),
        _rate_point(200, 199, p99=80),
        _rate_point(400, 300, p99=50),
        _rate_point(800, 790, p99=400),
    ]
    assert sustained_rate(points, 100.0) == 200
    assert sustained_rate([_rate_point(100, 100, p99=150)], 100.0) is None


def test_the_default_sweep_offers_more_than_the_goal_and_the_floor_more_than_the_sweep() -> None:
    # A sweep that stops at the goal cannot tell a machine that barely meets it from one
    # with room to spare; a floor below the sweep's top would not bound it.
    config = BenchConfig()
    assert list(config.rates) == sorted(config.rates)
    assert config.rates[-1] > GOALS["single_events_per_s"] * 1.5
    assert config.floor_rates[-1] > config.rates[-1]


def test_the_committed_report_is_the_commands_output_for_its_data() -> None:
    data = COMMITTED.parent / "benchmark" / "benchmark.json"
    result = BenchResult.from_json(data.read_text(encoding="utf-8"))
    assert COMMITTED.read_text(encoding="utf-8") == render_report(result)
    for name in PLOTS:
        assert (COMMITTED.parent / "benchmark" / name).read_bytes()[:8] == PNG
    # The guide's command is the one that wrote the report, on the interpreter it names.
    command = shlex.split(docs_block(GUIDE, "ts-bench-full").strip())
    interpreter = result.machine["interpreter"]["executable"]
    assert command == ["uv", "run", "--python", interpreter, *shlex.split(result.command)]
    assert json.loads(data.read_text())["config"]["events"] >= 1_000_000


def test_the_report_names_the_goals_and_whether_they_were_met() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    for goal in (">= 5,000 events/s", "< 25 ms", ">= 50% of COPY"):
        assert goal in text


def _rate_point(rate: float, achieved: float, p99: float = 5.0) -> dict[str, object]:
    latency = {"samples": 10, "p50_ms": 1.0, "p99_ms": p99, "p999_ms": p99}
    return {
        "offered_per_s": rate,
        "achieved_per_s": achieved,
        "latency": latency,
        "errors": 0,
        "unanswered": 0,
    }


def test_single_events_are_compared_with_the_floor_only_once_it_is_found() -> None:
    result = BenchResult(command="auditkit bench", started_at="-", machine={}, config={})
    result.single = [_rate_point(1000, 1000), _rate_point(2000, 1500)]
    result.floor = [_rate_point(4000, 4000), _rate_point(8000, 6000)]
    rows = {measure: value for measure, value, _, _ in summary_rows(result)}
    assert rows["HTTP floor (no-op app, same server and processes)"] == "6,000 requests/s"
    assert rows["single events: highest achieved rate"] == (
        "1,500 events/s (25% of the HTTP floor)"
    )
    result.floor = [_rate_point(4000, 4000), _rate_point(8000, 7990)]
    rows = {measure: value for measure, value, _, _ in summary_rows(result)}
    assert rows["HTTP floor (no-op app, same server and processes)"].startswith("above 7,990")
    assert rows["single events: highest achieved rate"] == "1,500 events/s"


def test_the_cpu_table_divides_by_events_and_bounds_the_rate() -> None:
    result = BenchResult(
        command="auditkit bench",
        started_at="-",
        machine={"cpus": 2, "memory_gib": 24, "platform": "Linux", "python": "3.11"},
        config=_config(),
    )
    cpu = {"api": 300.0, "postgres": 60.0, "valkey": 10.0, "worker": 1.0, "generator": 70.0}
    result.single = [
        {**_rate_point(1000, 1000), "cpu_us": {**cpu, "machine": 500.0}},
        {**_rate_point(4000, 3000), "cpu_us": {**cpu, "machine": 600.0}},
    ]
    result.batch = {"batch_size": 500, "events_per_s": 16000.0, "cpu_us": {"machine": 120.0}}
    rows = cpu_rows(result)
    # 500 µs in all, 441 charged to the parts: 59 unattributed; 0.5 cores busy.
    parts = ["300", "60", "10", "1", "70"]
    assert rows[0] == ["single, 1,000/s offered", "1,000", *parts, "59", "500", "0.50"]
    assert rows[1][-1] == "1.80"  # 600 µs per event at 3,000 events/s
    assert rows[2][:2] == ["batch of 500", "16,000"] and rows[2][-1] == "1.92"
    text = render_report(result)
    # Two cores at 600 µs an event at the top rate: no more than 3,333 events/s.
    assert "the machine spent 600 µs per event: at that cost, 3,333 events/s at most" in text
    assert "leave 400 µs per event" in text


def _config() -> dict[str, object]:
    from dataclasses import asdict

    return asdict(BenchConfig.quick())


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--connections", "0"], "--connections"),
        (["--rates", "fast"], "a comma-separated list"),
        (["--rates", "500,-1"], "positive rates"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(
    flags: list[str], named: str, tmp_path: Path
) -> None:
    done = auditkit("bench", "--out", str(tmp_path), *flags, env=dict(os.environ), timeout=60)
    assert done.returncode == 2
    assert named in done.stderr
    assert list(tmp_path.iterdir()) == []  # no report, no servers' files
