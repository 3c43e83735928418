"""The chain verifier on small explicit logs: one test per tamper kind and per rule."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest

from reference_impl.integrity import (
    GENESIS_HASH,
    ChainHead,
    ChainRecord,
    ChainVerifier,
    KeyRing,
    TamperKind,
    VerificationResult,
    canonicalize,
    chain_hash,
    verify_chain,
    verify_chain_async,
)
from reference_impl.integrity.verify import PROGRESS_INTERVAL

RING = KeyRing({"k-2024": b"\x01" * 32, "k-2025": b"\x02" * 32}, active_key_id="k-2024")
ATTACKER = KeyRing({"k-2025": b"\x66" * 32}, active_key_id="k-2025")
PATIENT = "Jane Example-Patient"


def _content(seq: int) -> bytes:
    return canonicalize({"action": "fhir.patient.read", "n": seq, "subject": PATIENT})


def _build(n: int, *, rotate_at: int | None = None) -> tuple[list[ChainRecord], ChainHead]:
    """A genuine log of ``n`` rows; rows from ``rotate_at`` on use the rotated key."""
    records: list[ChainRecord] = []
    prev = GENESIS_HASH
    for seq in range(n):
        ring = RING if rotate_at is None or seq < rotate_at else RING.with_active("k-2025")
        canonical = _content(seq)
        digest = chain_hash(prev, seq, canonical)
        key_id, signature = ring.sign(digest)
        records.append(ChainRecord(seq, prev, digest, canonical, key_id, signature))
        prev = digest
    return records, ChainHead(next_seq=n, head_hash=prev)


def _forge(seq: int, prev_hash: bytes) -> ChainRecord:
    """A row written by someone who knows the chain rule but not the ring's secrets."""
    canonical = canonicalize({"action": "fhir.patient.read", "forged": True})
    digest = chain_hash(prev_hash, seq, canonical)
    key_id, signature = ATTACKER.sign(digest)
    return ChainRecord(seq, prev_hash, digest, canonical, key_id, signature)


def _renumber(records: Sequence[ChainRecord], delta: int) -> list[ChainRecord]:
    return [dataclasses.replace(r, seq=r.seq + delta) for r in records]


def _flip(data: bytes, index: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def _verify(
    records: Sequence[ChainRecord], head: ChainHead | None, *, window: int = 1024
) -> VerificationResult:
    result = verify_chain(records, head, RING, window=window)
    assert PATIENT not in result.detail
    assert result.detail.endswith(".")
    return result


def _assert_broken(result: VerificationResult, seq: int, kind: TamperKind) -> None:
    assert not result.valid
    assert (result.first_broken_seq, result.kind) == (seq, kind), result.detail


# --- intact logs ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_intact_log_is_valid(n: int) -> None:
    records, head = _build(n)
    for given_head in (head, None):
        result = _verify(records, given_head)
        assert result == VerificationResult(True, n, None, None, f"All {n} records verified.")


def test_log_signed_across_a_key_rotation_is_valid() -> None:
    records, head = _build(6, rotate_at=3)
    assert [r.key_id for r in records] == ["k-2024"] * 3 + ["k-2025"] * 3
    assert _verify(records, head).valid


def test_empty_log_is_valid_with_a_genesis_head() -> None:
    result = _verify([], ChainHead(0, GENESIS_HASH))
    assert (result.valid, result.checked) == (True, 0)
    assert _verify([], None).valid


def test_retired_key_makes_its_rows_fail() -> None:
    records, head = _build(4, rotate_at=2)
    retired = KeyRing({"k-2025": b"\x02" * 32}, active_key_id="k-2025")
    result = verify_chain(records, head, retired)
    _assert_broken(result, 0, TamperKind.MODIFIED)
    assert "'k-2024' is not in the key ring" in result.detail


# --- modified ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: dataclasses.replace(r, canonical=_flip(r.canonical, 5)), "canonical bytes"),
        (lambda r: dataclasses.replace(r, hash=_flip(r.hash, 31)), "canonical bytes"),
        (lambda r: dataclasses.replace(r, prev_hash=_flip(r.prev_hash)), "previous hash"),
        (lambda r: dataclasses.replace(r, signature=_flip(r.signature)), "signature"),
        (lambda r: dataclasses.replace(r, key_id="k-2025"), "signature"),
        (lambda r: dataclasses.replace(r, key_id="k-unknown"), "not in the key ring"),
        (lambda r: dataclasses.replace(r, consistent=False), "queryable columns"),
    ],
    ids=["canonical", "hash", "prev_hash", "signature", "key_id", "unknown_key", "column"],
)
@pytest.mark.parametrize("k", [0, 2, 4])
def test_modified_row(change: Callable[[ChainRecord], ChainRecord], reason: str, k: int) -> None:
    records, head = _build(5)
    records[k] = change(records[k])
    result = _verify(records, head)
    _assert_broken(result, k, TamperKind.MODIFIED)
    assert result.checked == k
    assert reason in result.detail


def test_prev_hash_of_wrong_length_is_modified_not_an_error() -> None:
    records, head = _build(3)
    records[1] = dataclasses.replace(records[1], prev_hash=b"short")
    _assert_broken(_verify(records, head), 1, TamperKind.MODIFIED)


def test_wrong_head_hash_is_modified_at_the_last_row() -> None:
    records, _ = _build(3)
    result = _verify(records, ChainHead(3, _flip(records[-1].hash)))
    _assert_broken(result, 2, TamperKind.MODIFIED)
    assert result.checked == 3
    empty = _verify([], ChainHead(0, b"\x01" * 32))
    _assert_broken(empty, 0, TamperKind.MODIFIED)


# --- deleted ----------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 3])
def test_deleted_row_leaves_a_gap(k: int) -> None:
    records, head = _build(5)
    del records[k]
    result = _verify(records, head)
    _assert_broken(result, k, TamperKind.DELETED)
    assert result.checked == k
    assert f"next stored row has seq {k + 1}" in result.detail


@pytest.mark.parametrize("k", [0, 1, 3])
def test_deleted_row_with_later_rows_renumbered(k: int) -> None:
    records, head = _build(5)
    records = records[:k] + _renumber(records[k + 1 :], -1)
    assert [r.seq for r in records] == list(range(4))
    result = _verify(records, head)
    _assert_broken(result, k, TamperKind.DELETED)
    assert "renumbered" in result.detail


# --- inserted ---------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 2, 4])
def test_forged_row_with_a_duplicate_seq_before_the_genuine_one(k: int) -> None:
    records, head = _build(5)
    prev = records[k].prev_hash
    records.insert(k, _forge(k, prev))
    result = _verify(records, head)
    _assert_broken(result, k, TamperKind.INSERTED)
    assert result.checked == k


@pytest.mark.parametrize("k", [0, 2, 4])
def test_forged_row_with_a_duplicate_seq_after_the_genuine_one(k: int) -> None:
    records, head = _build(5)
    records.insert(k + 1, _forge(k, records[k].prev_hash))
    result = _verify(records, head)
    _assert_broken(result, k, TamperKind.INSERTED)
    assert result.checked == k + 1
    assert f"second row with seq {k}" in result.detail


@pytest.mark.parametrize("k", [0, 2, 4])
def test_forged_row_with_later_rows_renumbered(k: int) -> None:
    records, head = _build(5)
    forged = _forge(k, records[k].prev_hash)
    records = [*records[:k], forged, *_renumber(records[k:], +1)]
    assert [r.seq for r in records] == list(range(6))
    _assert_broken(_verify(records, head), k, TamperKind.INSERTED)


def test_row_appended_beyond_the_head() -> None:
    records, head = _build(4)
    records.append(_forge(4, records[-1].hash))
    result = _verify(records, head)
    _assert_broken(result, 4, TamperKind.INSERTED)
    assert result.checked == 4


def test_appended_row_without_a_head_reads_as_modified() -> None:
    records, _ = _build(4)
    records.append(_forge(4, records[-1].hash))
    _assert_broken(_verify(records, None), 4, TamperKind.MODIFIED)


def test_head_behind_fitting_rows_is_inserted_at_the_head() -> None:
    records, _ = _build(5)
    stale_head = ChainHead(3, records[2].hash)
    result = _verify(records, stale_head)
    _assert_broken(result, 3, TamperKind.INSERTED)
    assert result.checked == 5


def test_row_with_a_negative_seq() -> None:
    records, head = _build(3)
    records.insert(0, dataclasses.replace(_forge(0, GENESIS_HASH), seq=-1))
    _assert_broken(_verify(records, head), 0, TamperKind.INSERTED)


# --- reordered --------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(0, 1), (1, 2), (0, 4), (1, 3)])
def test_swapped_rows(a: int, b: int) -> None:
    records, head = _build(5)
    row_a, row_b = records[a], records[b]
    records[a] = dataclasses.replace(row_b, seq=a)
    records[b] = dataclasses.replace(row_a, seq=b)
    result = _verify(records, head)
    _assert_broken(result, a, TamperKind.REORDERED)
    assert result.checked == a
    assert f"seq {a} and seq {b}" in result.detail


def test_row_moved_past_a_gap() -> None:
    records, head = _build(5)
    moved = dataclasses.replace(records[1], seq=9)
    records = [records[0], *records[2:], moved]
    result = _verify(records, head)
    _assert_broken(result, 1, TamperKind.REORDERED)
    assert "stored at seq 9" in result.detail


# --- truncated --------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 4])
def test_truncated_log(k: int) -> None:
    records, head = _build(5)
    result = _verify(records[:k], head)
    _assert_broken(result, k, TamperKind.TRUNCATED)
    assert result.checked == k


def test_truncation_is_invisible_without_a_head() -> None:
    records, _ = _build(5)
    assert _verify(records[:3], None).valid


# --- window -----------------------------------------------------------------


def test_swap_beyond_the_window_reads_as_modified() -> None:
    records, head = _build(8)
    records[1], records[6] = (
        dataclasses.replace(records[6], seq=1),
        dataclasses.replace(records[1], seq=6),
    )
    _assert_broken(_verify(records, head, window=5), 1, TamperKind.REORDERED)
    _assert_broken(_verify(records, head, window=4), 1, TamperKind.MODIFIED)


def test_adjacent_swap_without_lookahead_reads_as_deleted() -> None:
    records, head = _build(4)
    records[1], records[2] = (
        dataclasses.replace(records[2], seq=1),
        dataclasses.replace(records[1], seq=2),
    )
    _assert_broken(_verify(records, head, window=0), 1, TamperKind.DELETED)
    _assert_broken(_verify(records, head, window=1), 1, TamperKind.REORDERED)


def test_needs_more_turns_false_once_the_window_past_a_break_is_full() -> None:
    records, _ = _build(10)
    records[2] = dataclasses.replace(records[2], consistent=False)
    verifier = ChainVerifier(RING, window=3)
    states = []
    for record in records:
        verifier.feed(record)
        states.append(verifier.needs_more)
    # Rows 0-1 fit, row 2 breaks, rows 3-5 fill the window.
    assert states == [True, True, True, True, True, False, False, False, False, False]
    assert verifier.checked == 2
    result = verifier.finish(None)
    _assert_broken(result, 2, TamperKind.MODIFIED)
    assert not verifier.needs_more


def test_needs_more_with_no_window_is_false_at_the_break() -> None:
    records, _ = _build(3)
    verifier = ChainVerifier(RING, window=0)
    verifier.feed(records[0])
    assert verifier.needs_more
    verifier.feed(records[2])
    assert not verifier.needs_more
    _assert_broken(verifier.finish(None), 1, TamperKind.DELETED)


def test_needs_more_stays_true_while_the_chain_is_good() -> None:
    records, head = _build(50)
    verifier = ChainVerifier(RING, window=0)
    for record in records:
        verifier.feed(record)
        assert verifier.needs_more
    assert verifier.finish(head).valid


def test_verify_chain_stops_reading_after_the_window() -> None:
    records, head = _build(40)
    records[5] = dataclasses.replace(records[5], signature=b"")
    consumed = 0

    def rows() -> Iterator[ChainRecord]:
        nonlocal consumed
        for record in records:
            consumed += 1
            yield record

    result = verify_chain(rows(), head, RING, window=4)
    _assert_broken(result, 5, TamperKind.MODIFIED)
    assert consumed == 5 + 1 + 4


def test_verify_chain_async_matches_and_stops_early() -> None:
    records, head = _build(40)
    records[5], records[7] = (
        dataclasses.replace(records[7], seq=5),
        dataclasses.replace(records[5], seq=7),
    )
    consumed = 0

    async def rows() -> AsyncIterator[ChainRecord]:
        nonlocal consumed
        for record in records:
            consumed += 1
            await asyncio.sleep(0)
            yield record

    result = asyncio.run(verify_chain_async(rows(), head, RING, window=3))
    assert result == verify_chain(records, head, RING, window=3)
    _assert_broken(result, 5, TamperKind.REORDERED)
    assert consumed == 5 + 1 + 3


def test_progress_reports_rows_read() -> None:
    records, head = _build(PROGRESS_INTERVAL * 2 + 5)
    seen: list[int] = []
    assert verify_chain(records, head, RING, progress=seen.append).valid
    assert seen == [PROGRESS_INTERVAL, PROGRESS_INTERVAL * 2, PROGRESS_INTERVAL * 2 + 5]
    async_seen: list[int] = []

    async def rows() -> AsyncIterator[ChainRecord]:
        for record in records:
            yield record

    assert asyncio.run(verify_chain_async(rows(), head, RING, progress=async_seen.append)).valid
    assert async_seen == seen


# --- misuse -----------------------------------------------------------------


def test_verifier_is_single_use() -> None:
    verifier = ChainVerifier(RING)
    verifier.finish(None)
    with pytest.raises(RuntimeError):
        verifier.finish(None)
    with pytest.raises(RuntimeError):
        verifier.feed(_forge(0, GENESIS_HASH))


def test_negative_window_and_head_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        ChainVerifier(RING, window=-1)
    with pytest.raises(ValueError, match="next_seq"):
        ChainHead(-1, GENESIS_HASH)


def test_record_repr_leaves_out_the_content() -> None:
    records, _ = _build(1)
    assert PATIENT not in repr(records[0])
    assert "seq=0" in repr(records[0])


def test_tamper_kinds_are_plain_strings() -> None:
    assert [str(kind) for kind in TamperKind] == [
        "modified",
        "deleted",
        "inserted",
        "reordered",
        "truncated",
    ]


def test_offline_verifier_needs_no_framework_database_or_settings() -> None:
    code = (
        "import sys, reference_impl.integrity\n"
        "banned = ('fastapi', 'starlette', 'sqlalchemy', 'asyncpg', 'redis', 'pydantic',"
        " 'pydantic_settings')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in banned"
        " or m.startswith('reference_impl.core'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
