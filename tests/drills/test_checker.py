"""The history checker finds what it exists to find: loss, duplicates, gaps, broken chains,
answers that did not hold; and it measures recovery from the history alone."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checker import (
    NOT_RECOVERED,
    FaultWindow,
    StoredRow,
    Verdict,
    check_history,
    fault_windows,
    measure_recovery,
    percentile,
)

T = "tenant-a"


def ack(event_id: str, t: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {"k": "ack", "t": t, "event_id": event_id, "tenant": T, "mode": "sync", **extra}


def attempt(t0: float, t1: float, result: str = "ok", n: int = 1) -> dict[str, Any]:
    return {"k": "attempt", "t0": t0, "t1": t1, "result": result, "n": n, "status": 201}


def rows(*event_ids: str) -> list[StoredRow]:
    return [StoredRow(T, seq, e, f"h{seq}") for seq, e in enumerate(event_ids)]


def test_a_clean_history_passes() -> None:
    history = [ack("e1", seq=0, hash="h0"), ack("e2", seq=1, hash="h1"), ack("e3")]
    verdict = check_history(history, rows("e1", "e2", "e3"), {T: True})
    assert verdict.ok, verdict.problems()
    assert (verdict.acknowledged, verdict.stored) == (3, 3)
    assert verdict.problems() == []


def test_an_acknowledged_event_missing_from_storage_and_a_duplicate_are_both_reported() -> None:
    history = [ack("e1"), ack("e2"), ack("lost-1"), ack("e3")]
    stored = [
        StoredRow(T, 0, "e1", "h0"),
        StoredRow(T, 1, "e2", "h1"),
        StoredRow(T, 2, "e2", "h2"),  # the same event stored a second time
        StoredRow(T, 3, "e3", "h3"),
    ]
    verdict = check_history(history, stored, {T: True})
    assert not verdict.ok
    assert verdict.lost == ["lost-1"]
    assert verdict.duplicates == ["e2"]
    problems = verdict.problems()
    assert "1 acknowledged but not stored: lost-1" in problems
    assert "1 stored more than once: e2" in problems


def test_an_event_acknowledged_under_one_tenant_and_stored_under_another_is_lost() -> None:
    stored = [StoredRow("tenant-b", 0, "e1", "h0")]
    verdict = check_history([ack("e1")], stored, {"tenant-b": True})
    assert verdict.lost == ["e1"]


def test_a_lost_event_found_in_the_dead_letter_queue_is_still_lost_and_named() -> None:
    verdict = check_history([ack("e1"), ack("e2")], rows("e1"), {T: True}, dead_lettered=["e2"])
    assert verdict.lost == ["e2"] and verdict.lost_in_dlq == ["e2"]
    assert not verdict.ok


def test_gaps_and_repeated_seqs_are_reported() -> None:
    stored = [StoredRow(T, 0, "e1", "a"), StoredRow(T, 2, "e2", "b"), StoredRow(T, 2, "e3", "c")]
    verdict = check_history([], stored, {T: True})
    assert verdict.seq_problems == [f"{T}: seq [2] stored more than once", f"{T}: seq [1] missing"]
    assert not verdict.ok


def test_a_broken_or_unverified_chain_fails() -> None:
    assert not check_history([ack("e1")], rows("e1"), {T: False}).ok
    verdict = check_history([ack("e1")], rows("e1"), {})
    assert not verdict.ok and verdict.problems() == ["no chain was verified"]


def test_a_receipt_must_name_the_stored_seq_and_hash() -> None:
    verdict = check_history([ack("e1", seq=0, hash="other")], rows("e1"), {T: True})
    assert verdict.receipt_mismatches == ["e1"]


def test_stored_but_unacknowledged_is_allowed_and_counted_apart() -> None:
    unknown = {"k": "unknown", "t": 1.0, "event_id": "e2", "tenant": T}
    verdict = check_history([ack("e1"), unknown], rows("e1", "e2", "e3"), {T: True})
    assert verdict.ok
    assert verdict.stored_unacknowledged == 2
    assert verdict.unknown == 1


def test_422_is_not_an_acknowledgement_and_must_not_be_stored() -> None:
    rejected = {
        "k": "reject",
        "t": 2.0,
        "event_id": "late",
        "tenant": T,
        "status": 422,
        "skew_s": -3_000_000,
        "expect": "reject",
    }
    verdict = check_history([ack("e1"), rejected], rows("e1"), {T: True})
    assert verdict.ok and verdict.rejected == 1 and verdict.acknowledged == 1
    stored_anyway = check_history([ack("e1"), rejected], rows("e1", "late"), {T: True})
    assert stored_anyway.rejected_but_stored == ["late"]
    assert not stored_anyway.ok


def test_skewed_events_must_get_the_answer_their_clock_deserves() -> None:
    refused_in_bounds = {"k": "reject", "t": 2.0, "event_id": "x", "tenant": T, "status": 422}
    refused_in_bounds |= {"skew_s": 150, "expect": "accept"}
    accepted_beyond = ack("y", skew_s=3600, expect="reject")
    verdict = check_history([refused_in_bounds, accepted_beyond], rows("y"), {T: True})
    assert verdict.unexpected_rejections == ["x (422)"]
    assert verdict.wrongly_accepted == ["y"]
    assert not verdict.ok


def test_fault_windows_pair_start_and_end_marks() -> None:
    marks = [
        {"t": 5.0, "mark": "fault_start", "what": "a"},
        {"t": 7.0, "mark": "fault_end"},
        {"t": 1.0, "mark": "load_start"},
        {"t": 9.0, "mark": "fault_start", "what": "b"},
        {"t": 12.0, "mark": "fault_end"},
    ]
    assert fault_windows(marks) == [FaultWindow(5.0, 7.0, "a"), FaultWindow(9.0, 12.0, "b")]


def test_faults_injected_back_to_back_are_one_window() -> None:
    marks = [
        {"t": 5.0, "mark": "fault_start", "what": "pause"},
        {"t": 7.0, "mark": "fault_end"},
        {"t": 7.0, "mark": "fault_start", "what": "kill"},
        {"t": 12.0, "mark": "fault_end"},
    ]
    assert fault_windows(marks) == [FaultWindow(5.0, 12.0, "pause, kill")]


def test_recovery_is_measured_to_the_first_success_and_to_a_healthy_window() -> None:
    window = FaultWindow(10.0, 20.0, "postgresql SIGKILL")
    history = [attempt(t, t + 0.01) for t in (0.0, 0.5, 1.0)]  # steady
    history += [attempt(t, t + 0.01, "info") for t in (20.0, 21.0, 22.0)]  # still failing
    history += [attempt(23.0, 23.4)]  # first success, but slow
    history += [attempt(23.5 + i / 10, 23.52 + i / 10) for i in range(30)]  # healthy, fast
    recovery = measure_recovery(history, window, p99_bound_ms=100)
    assert recovery.first_success_s == pytest.approx(3.4)
    # The first one-second window without the slow request starts just after it.
    assert recovery.p99_s == pytest.approx(3.1)


def test_a_service_that_never_recovers_is_reported_so() -> None:
    window = FaultWindow(10.0, 20.0)
    history = [attempt(t, t + 0.01, "info") for t in range(20, 40)]
    recovery = measure_recovery(history, window, p99_bound_ms=100)
    assert recovery.first_success_s == NOT_RECOVERED
    assert recovery.p99_s == NOT_RECOVERED
    verdict = check_history(
        [*history, ack("e1")],
        rows("e1"),
        {T: True},
        marks=[{"t": 10.0, "mark": "fault_start"}, {"t": 20.0, "mark": "fault_end"}],
    )
    assert verdict.recovery_first_success_s == NOT_RECOVERED


def test_the_verdict_survives_its_json_form() -> None:
    verdict = check_history([ack("e1"), ack("e2")], rows("e1"), {T: True})
    again = Verdict.from_dict(verdict.as_dict())
    assert again == verdict
    assert verdict.as_dict()["ok"] is False


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
