"""The bench names the interpreter it ran on, and times it with a fixed workload."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtests.bench import interpreter
from loadtests.bench.interpreter import calibration_ms, describe
from loadtests.bench.report import _interpreter_sentence


def test_a_shared_libpython_is_told_from_one_linked_into_the_executable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.write_text(
        "7f00-7f10 r-xp 00000000 fd:01 1 /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
    )
    static = tmp_path / "static"
    static.write_text("5600-5700 r-xp 00000000 fd:01 2 /usr/bin/python3.11\n")
    assert describe(shared).libpython == "shared"
    assert describe(static).libpython == "static"
    assert describe(tmp_path / "missing").libpython == "unknown"


def test_the_running_interpreter_is_described() -> None:
    me = describe()
    assert Path(me.executable) == Path(sys.executable).resolve()
    assert me.version == ".".join(map(str, sys.version_info[:3]))


def test_the_calibration_measures_cpu_time() -> None:
    one, best_of_three = calibration_ms(rounds=1), calibration_ms(rounds=3)
    assert one > 0 and best_of_three > 0


def test_the_calibration_is_the_best_of_its_rounds_in_cpu_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each round reads the CPU clock before and after the workload: rounds of 40, 25 and
    # 31 ms of CPU.
    readings = iter([0.0, 0.040, 1.0, 1.025, 2.0, 2.031])
    monkeypatch.setattr(interpreter.time, "process_time", lambda: next(readings))
    assert calibration_ms(rounds=3) == 25.0


def test_the_report_says_nothing_of_an_interpreter_it_did_not_record() -> None:
    assert _interpreter_sentence({"cpus": 2, "python": "3.11.7"}) == ""
    machine = {
        "interpreter": {
            "executable": "/usr/bin/python3.11",
            "libpython": "static",
            "compiler": "GCC 12.2.0",
        },
        "calibration_ms": {"start": 25.6, "end": 27.0},
    }
    text = _interpreter_sentence(machine)
    assert "`/usr/bin/python3.11` (libpython static, GCC 12.2.0)" in text
    assert "25.6 ms of CPU at the start and 27 ms at the end" in text
