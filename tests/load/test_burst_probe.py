"""`python -m loadtests.bench.burst` sends its bursts, counts what was stored, and fails
when an answer is not 201 or an event is missing (no timing is asserted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from loadtests.bench.burst import Burst, main, read_status, verdict

pytestmark = pytest.mark.load


def _burst(*statuses: int) -> Burst:
    return Burst(1.0, 2.0, 3.0, statuses, {"api": 0.0, "postgres": 0.0, "client": 0.0})


def test_a_run_of_small_bursts_stores_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
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
    assert "stored" not in out  # no loss reported


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
