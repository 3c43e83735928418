"""The drill report: written and read back in one format, and the committed one is in it."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chaos.checker import NOT_RECOVERED, Recovery, Verdict
from chaos.report import (
    DRILLS,
    PLOT_NAME,
    DrillResult,
    ReportMeta,
    ReportRow,
    parse_report,
    phases_for,
    plot_results,
    render_report,
)
from reference_impl.cli import app
from tests.docs.blocks import DOCS_DIR, docs_block

COMMITTED = DOCS_DIR / "drills" / "chaos" / "report.md"


def _row(**changes: object) -> ReportRow:
    row = ReportRow(
        drill="postgres-kill",
        fault="PostgreSQL is killed under load and restarted",
        acknowledged=1200,
        stored=1203,
        lost=0,
        duplicates=0,
        first_success_s=0.05,
        p99_s=4.5,
        chain_valid=True,
        passed=True,
        stored_unacknowledged=3,
        rejected=0,
        attempts=1400,
        errors=80,
        steady_p99_ms=120.5,
        status="completed",
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def test_render_and_parse_round_trip() -> None:
    meta = ReportMeta("auditkit drill chaos all --duration 60 --out x", "2026-11-23 15:40 UTC", 60)
    rows = [
        _row(),
        _row(drill="clock-skew", rejected=40, steady_p99_ms=None, first_success_s=None),
        _row(drill="valkey-kill", lost=2, passed=False, chain_valid=False, status="deviated"),
        _row(drill="api-kill", p99_s=NOT_RECOVERED),
    ]
    text = render_report(meta, rows)
    assert parse_report(text) == (meta, rows)
    assert "| valkey-kill | PostgreSQL is killed" in text and "| NO | FAIL |" in text
    assert "not recovered" in text


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t.replace("# Chaos drill report", "# Report"),
        lambda t: t.replace("Written by", "Made by"),
        lambda t: t.replace("| stored, not acknowledged |", "| stored |"),
        lambda t: t.replace("| 1200 |", "| many |"),
    ],
)
def test_parse_refuses_another_format(damage: object) -> None:
    text = render_report(ReportMeta("auditkit drill chaos all", "now", 60), [_row()])
    with pytest.raises(ValueError):  # noqa: PT011 - any of the format errors
        parse_report(damage(text))  # type: ignore[operator]


def test_a_result_fails_on_loss_deviation_or_slow_recovery() -> None:
    verdict = Verdict(acknowledged=1, stored=1, chains={"t": True})
    verdict.recoveries = [Recovery("x", 0.1, 2.0)]
    ok = DrillResult("postgres-kill", "f", "completed", False, 0, verdict)
    assert ok.passed
    assert not dataclasses.replace(ok, deviated=True).passed
    assert not dataclasses.replace(ok, exit_code=1).passed
    assert not dataclasses.replace(ok, verdict=None).passed
    slow = dataclasses.replace(verdict, recoveries=[Recovery("x", 0.1, 31.0)])
    assert not dataclasses.replace(ok, verdict=slow).passed
    lost = dataclasses.replace(verdict, lost=["e1"])
    assert not dataclasses.replace(ok, verdict=lost).passed


def test_phases_scale_with_the_duration() -> None:
    short, full = phases_for(20), phases_for(60)
    assert short.total_s == 20 and full.total_s == 60
    assert full.fault_s == 10  # the full PostgreSQL freeze: 10 s
    assert short.recover_s >= 12 and full.recover_s >= 12


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    timeline = {"acked": [10, 12, 0, 9], "errors": [0, 0, 5, 0], "refused": [0, 1, 0, 0]}
    result = DrillResult(
        "x", "f", "completed", False, 0, None, {**timeline, "faults": [[1, 2, "x"]]}
    )
    plot_results([result], tmp_path / PLOT_NAME)
    assert (tmp_path / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_report_is_the_commands_format_and_names_every_drill() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    meta, rows = parse_report(text)
    assert render_report(meta, rows) == text
    assert [r.drill for r in rows] == list(DRILLS)
    assert all(r.passed and r.lost == 0 and r.duplicates == 0 and r.chain_valid for r in rows)
    command = docs_block("drills/chaos.md", "drills-chaos-regenerate").strip()
    assert shlex.split(command) == ["uv", "run", *shlex.split(meta.command)]
    assert (COMMITTED.parent / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in DRILLS:
        assert (COMMITTED.parent / "journals" / f"{name}.json").is_file()


def test_the_command_refuses_an_unknown_drill() -> None:
    result = CliRunner().invoke(app, ["drill", "chaos", "no-such-drill"])
    assert result.exit_code == 2
    assert "no drill 'no-such-drill'" in result.output
