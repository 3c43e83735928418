"""`python -m loadtests.bench.burst` sends its bursts, counts what was stored, and fails
when an answer is not 201 or an event is missing (no timing is asserted)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from loadtests.bench.burst import (
    BOUND_MS,
    Burst,
    cpu_floor_ms,
    floor_summary,
    main,
    read_status,
    verdict,
)
from loadtests.thresholds import THRESHOLDS
from tests.docs.blocks import docs_block

pytestmark = pytest.mark.load

GUIDE = "guides/testing-strategies.md"


def _burst(*statuses: int) -> Burst:
    return Burst(1.0, 2.0, 3.0, statuses, {"api": 0.0, "postgres": 0.0, "client": 0.0})


def _guide_arguments() -> list[str]:
    """The arguments of the guide's probe command, after the module name."""
    command = shlex.split(docs_block(GUIDE, "ts-burst-probe").strip())
    assert command[:2] == ["uv", "run"]
    module = command.index("loadtests.bench.burst")
    assert command[module - 2 : module] == ["python", "-m"]
    return command[module + 1 :]


def test_a_run_of_small_bursts_stores_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The guide's command, with sizes small enough for the suite (later flags win).
    code = main(
        [
            *_guide_arguments(),
            "--rounds",
            "2",
            "--events",
            "60",
            "--batches",
            "3",
            "--pause",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "over 2 bursts" in out
    assert "CPU floor (the service's CPU over" in out
    assert "stored" not in out  # no loss reported


def _costing(api_ms: float, postgres_ms: float, last_ms: float, machine_ms: float) -> Burst:
    return Burst(
        1.0,
        2.0,
        last_ms,
        (201,),
        {"api": api_ms, "postgres": postgres_ms, "client": 15.0},
        machine_ms,
    )


def test_the_cpu_floor_is_the_services_cpu_over_the_cores() -> None:
    burst = _costing(api_ms=300.0, postgres_ms=200.0, last_ms=400.0, machine_ms=700.0)
    # The client's and the unattributed CPU stay out of the floor; they count as busy cores.
    assert burst.floor_ms(2) == 250.0
    assert burst.floor_ms(4) == 125.0
    assert burst.cores_busy() == 1.75
    with pytest.raises(ValueError, match="cores"):
        cpu_floor_ms(100.0, 0)


def test_the_floor_summary_counts_the_bursts_that_could_meet_the_bound() -> None:
    assert BOUND_MS == THRESHOLDS["burst"][0].p99_ms == 200.0
    bursts = [
        _costing(api_ms=300.0, postgres_ms=200.0, last_ms=400.0, machine_ms=700.0),  # 250
        _costing(api_ms=250.0, postgres_ms=150.0, last_ms=300.0, machine_ms=500.0),  # 200
        _costing(api_ms=200.0, postgres_ms=120.0, last_ms=260.0, machine_ms=400.0),  # 160
    ]
    assert floor_summary(bursts, 2) == (
        "CPU floor (the service's CPU over 2 cores): 160 to 250 ms, median 200 ms;"
        " 2 of 3 bursts within 200 ms"
    )


def test_loss_and_refusals_fail_the_run() -> None:
    assert verdict(100, 100, [_burst(201, 201)]) == []
    assert verdict(100, 99, [_burst(201, 201)]) == ["100 events sent, 99 stored"]
    assert verdict(100, 100, [_burst(201, 503), _burst(429)]) == [
        "answers other than 201: [429, 503]"
    ]


def test_the_status_is_read_and_the_body_consumed() -> None:
    async def read() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}NEXT")
        reader.feed_eof()
        return await read_status(reader), await reader.read()

    assert asyncio.run(read()) == (201, b"NEXT")


@pytest.mark.parametrize(
    "argv",
    [["--rounds", "0"], ["--events", "5", "--batches", "10"], ["--setting", "LINGER"]],
)
def test_bad_arguments_are_refused_before_anything_starts(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
