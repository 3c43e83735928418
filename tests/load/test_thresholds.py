"""The drills' thresholds decide a run from what Locust saw: failures, p95, p99, memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.drill import DRILLS, SHORT, locust_command
from loadtests.thresholds import (
    MEMORY_GROWTH_LIMIT,
    THRESHOLDS,
    Observed,
    evaluate,
    memory_growth,
)

pytestmark = pytest.mark.load

NAME = "POST /v1/events [sustained]"


def test_a_run_within_every_bound_passes() -> None:
    seen = {NAME: Observed(requests=1000, failures=0, p95_ms=40, p99_ms=90)}
    assert evaluate(["sustained"], seen) == []


@pytest.mark.parametrize(
    ("observed", "problem"),
    [
        (Observed(1000, 1, 40, 90), "failed 0.10% of 1000 requests (at most 0.00%)"),
        (Observed(1000, 0, 140, 150), "p95 140 ms (at most 100 ms)"),
        (Observed(1000, 0, 40, 101), "p99 101 ms (at most 100 ms)"),
        (Observed(0, 0, 0, 0), "no 'POST /v1/events [sustained]' request was made"),
    ],
)
def test_each_broken_bound_is_named(observed: Observed, problem: str) -> None:
    problems = evaluate(["sustained"], {NAME: observed})
    assert any(p.endswith(problem) for p in problems), problems


def test_only_the_scenarios_that_ran_are_judged() -> None:
    assert evaluate([], {}) == []
    assert len(evaluate(["burst"], {NAME: Observed(10, 0, 1, 1)})) == 1


def test_the_design_criteria_are_the_bounds() -> None:
    [sustained] = THRESHOLDS["sustained"]
    [burst] = THRESHOLDS["burst"]
    [stress] = THRESHOLDS["stress"]
    assert (sustained.max_failure_ratio, sustained.p99_ms) == (0.0, 100.0)
    assert (burst.max_failure_ratio, burst.p99_ms) == (0.0, 200.0)
    assert stress.max_failure_ratio == 0.0  # pool exhaustion shows as 503s or timeouts
    assert DRILLS["sustained"].options == ("--target-rate", "1000")
    assert DRILLS["burst"].options == ("--burst-events", "5000")
    assert DRILLS["stress"].users == 10_000


def test_memory_growth_ignores_a_spike_and_finds_a_leak() -> None:
    flat = [(float(t), 100.0) for t in range(20)]
    spike = [*flat[:10], (10.0, 500.0), *flat[11:]]
    leak = [(float(t), 100.0 + 5 * t) for t in range(20)]
    assert memory_growth(flat) == 0.0
    assert memory_growth(spike) == 0.0
    growth = memory_growth(leak)
    assert growth is not None and growth > MEMORY_GROWTH_LIMIT
    assert memory_growth(flat[:5]) is None


def test_every_drill_has_a_short_form_and_a_scenario_with_thresholds(tmp_path: Path) -> None:
    assert sorted(SHORT) == sorted(DRILLS) == sorted(THRESHOLDS)
    for name in DRILLS:
        command, drill = locust_command(name, "http://127.0.0.1:9", tmp_path, short=True)
        assert command[-len(drill.classes) :] == list(drill.classes)
        assert "--headless" in command and "--csv" in command and "--html" in command


def test_the_guide_table_names_a_real_command_for_each_criterion() -> None:
    import re
    import shlex

    from tests.docs.blocks import DOCS_DIR

    text = (DOCS_DIR / "guides" / "testing-strategies.md").read_text(encoding="utf-8")
    rows = {
        cells[0]: cells[2].strip("`")
        for line in text.splitlines()
        if line.startswith("| ")
        and (cells := [c.strip() for c in line.strip().strip("|").split("|")])
        and len(cells) == 4
        and re.fullmatch(r"`.+`", cells[2])
    }
    criteria = ["sustained load", "burst traffic", "database stress", "memory pressure", "recovery"]
    assert list(rows) == criteria
    drills = {"sustained load": "sustained", "burst traffic": "burst"}
    drills |= {"database stress": "stress", "memory pressure": "soak"}
    for criterion, drill in drills.items():
        assert shlex.split(rows[criterion]) == [
            "uv",
            "run",
            "python",
            "-m",
            "loadtests.drill",
            drill,
        ]
        assert drill in DRILLS
    assert shlex.split(rows["recovery"])[:5] == ["uv", "run", "auditkit", "drill", "chaos"]
