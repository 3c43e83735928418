"""`python -m loadtests.bench.parsing` times every way of parsing it names (no timing is
asserted: the figures are for people, the run only has to work)."""

from __future__ import annotations

import re

import pytest

from loadtests.bench.parsing import main

pytestmark = pytest.mark.load


def test_each_way_of_parsing_gets_a_figure(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--batches", "2", "--size", "5", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 batches of 5 events, fastest of 1 passes"
    figures = [re.fullmatch(r"  (.+?) +(\d+\.\d\d) µs/event", line) for line in lines[1:]]
    assert [m.group(1) for m in figures if m] == [
        "model validation + model_dump",
        "PlainSchema validation",
        "parse_batch (all of it)",
    ]
    assert all(float(m.group(2)) > 0 for m in figures if m)
