"""Rollbacks run when an experiment fails: nothing a failed drill started is left running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from chaos.report import EXPERIMENTS, Phases, chaos_run_args

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def _failing_experiment(tmp_path: Path, how: str) -> Path:
    """The PostgreSQL drill cut short: its second step fails, and its hypothesis cannot hold.

    `deviated`: the step fails and the method goes on to a hypothesis that does not hold.
    `interrupted`: the step stops the experiment (the fault could not be injected).
    """
    exp = yaml.safe_load((EXPERIMENTS / "postgres-kill.yaml").read_text(encoding="utf-8"))
    start = exp["method"][0]
    if how == "deviated":  # nothing to restore: the step raises
        provider = {"func": "restore_valkey_memory", "arguments": {"run_dir": "${run_dir}"}}
    else:  # no load, so no batch to kill mid-way
        provider = {
            "func": "kill_worker_mid_batch",
            "arguments": {"run_dir": "${run_dir}", "timeout_s": 0.5},
        }
    step = {
        "type": "action",
        "name": "fails",
        "provider": {"type": "python", "module": "chaos.actions", **provider},
    }
    exp["method"] = [start, step]
    ready = exp["steady-state-hypothesis"]["probes"][2]
    assert ready["provider"]["func"] == "readiness"
    exp["steady-state-hypothesis"]["probes"] = [{**ready, "tolerance": 599}]
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(exp), encoding="utf-8")
    return path


@pytest.mark.parametrize("how", ["deviated", "interrupted"])
def test_rollbacks_stop_everything_when_the_experiment_fails(tmp_path: Path, how: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "chaostoolkit-settings.yaml").write_text("{}\n", encoding="utf-8")
    journal = tmp_path / "journal.json"
    args = chaos_run_args(_failing_experiment(tmp_path, how), run_dir, journal, Phases(1, 1, 1))
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0, done.stdout + done.stderr
    result = json.loads(journal.read_text(encoding="utf-8"))
    if how == "deviated":
        assert result["run"][1]["status"] == "failed"
        assert result["deviated"] is True
    else:
        assert result["status"] == "interrupted"
    assert [r["activity"]["name"] for r in result["rollbacks"]] == ["stop-everything"]
    assert result["rollbacks"][0]["status"] == "succeeded"
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    assert state["stopped"] is True
    started = [state["postgres"], state["valkey"], *state["apis"], *state["workers"]]
    assert all(entry["pid"] for entry in started)
    for entry in started:
        assert not _alive(entry["pid"], entry["create_time"]), entry
    assert not Path(state["root"]).exists()
    assert (run_dir / "logs" / "postgresql.log").exists()


def _alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.01 and proc.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def test_the_runner_plays_rollbacks_always() -> None:
    args = chaos_run_args(Path("x.yaml"), Path("r"), Path("j.json"), Phases(1, 1, 1))
    i = args.index("--rollback-strategy")
    assert args[i + 1] == "always"
    assert args[0].endswith("chaos") or args[:3] == [sys.executable, "-m", "chaostoolkit"]
