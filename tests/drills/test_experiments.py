"""Every chaos experiment is valid for the Chaos Toolkit and has the parts a drill needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.report import DRILLS, EXPERIMENTS, drill_names

pytestmark = pytest.mark.chaos

CHAOS = Path(sys.executable).parent / "chaos"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _experiment(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_experiment_is_a_drill_and_every_drill_has_one() -> None:
    assert sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")) == sorted(DRILLS)


@pytest.mark.parametrize("name", DRILLS)
def test_chaos_validate_accepts_the_experiment(name: str, tmp_path: Path) -> None:
    log = str(tmp_path / "chaostoolkit.log")
    done = subprocess.run(
        [str(CHAOS), "--log-file", log, "validate", str(EXPERIMENTS / f"{name}.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "experiment syntax and semantic look valid" in done.stdout + done.stderr


def test_chaos_validate_refuses_a_broken_experiment(tmp_path: Path) -> None:
    """The validation above can fail: an action naming a missing function is refused."""
    broken = _experiment("postgres-kill")
    broken["method"][0]["provider"]["func"] = "no_such_action"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = subprocess.run(
        [str(CHAOS), "--log-file", str(tmp_path / "chaostoolkit.log"), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0


@pytest.mark.parametrize("name", DRILLS)
def test_the_experiment_has_what_a_drill_needs(name: str) -> None:
    exp = _experiment(name)
    assert exp["title"] and exp["description"]
    probes = exp["steady-state-hypothesis"]["probes"]
    assert all("tolerance" in p for p in probes)
    # The history check comes first: its verdict is written even if a later probe fails.
    assert probes[0]["provider"]["func"] == "history_is_consistent"
    funcs = [p["provider"]["func"] for p in probes]
    assert {"recovery_seconds", "readiness", "error_ratio", "p99_latency_ms"} <= set(funcs)
    p99 = next(p for p in probes if p["provider"]["func"] == "p99_latency_ms")
    assert p99["tolerance"]["range"][1] == exp["configuration"]["p99_bound_ms"]
    recovery = next(p for p in probes if p["provider"]["func"] == "recovery_seconds")
    assert recovery["tolerance"]["range"] == [0.0, 30.0]
    steps = [a["provider"]["func"] for a in exp["method"]]
    assert steps[:2] == ["start_stack", "start_load"]
    assert steps[-2:] == ["stop_load", "drain_queue"]
    assert any(a["provider"]["func"] not in {"wait"} for a in exp["method"][3:-3])
    assert [r["provider"]["func"] for r in exp["rollbacks"]] == ["stop_stack"]


@pytest.mark.parametrize("name", DRILLS)
def test_each_drill_has_a_playbook(name: str) -> None:
    page = DOCS / "playbooks" / f"{name}.md"
    text = page.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Drill"]
    assert f"chaos/experiments/{name}.yaml" in text


def test_drill_names_accepts_all_or_one_name() -> None:
    assert drill_names("all") == list(DRILLS)
    assert drill_names("valkey-oom") == ["valkey-oom"]
    with pytest.raises(ValueError, match="no drill 'nope'"):
        drill_names("nope")
