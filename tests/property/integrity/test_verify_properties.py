"""The verifier names the exact first broken seq and kind of any single tamper.

Logs are built with the real chain and key ring. The attacker knows the chain
rule and can recompute SHA-256 hashes, rewrite any column and renumber rows, but
holds no ring secret: forged rows carry a random signature or one made with the
attacker's own key.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.integrity import (
    GENESIS_HASH,
    ChainHead,
    ChainRecord,
    KeyRing,
    TamperKind,
    VerificationResult,
    canonicalize,
    chain_hash,
    verify_chain,
    verify_chain_async,
)

pytestmark = pytest.mark.property

T = TypeVar("T")


class Draw(Protocol):
    """What both ``@composite`` and ``st.data()`` hand out for drawing values."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...


RING = KeyRing({"k-2024": b"\x01" * 32, "k-2025": b"\x02" * 32}, active_key_id="k-2024")
ATTACKER = KeyRing({"k-2024": b"\x66" * 32, "k-evil": b"\x99" * 32}, active_key_id="k-2024")

contents = st.dictionaries(
    st.sampled_from(["action", "outcome", "subject", "details"]),
    st.integers(-3, 3) | st.text(max_size=4),
    max_size=3,
).map(canonicalize)


@dataclasses.dataclass(frozen=True)
class Log:
    records: list[ChainRecord]
    head: ChainHead


@dataclasses.dataclass(frozen=True)
class Tampered:
    records: list[ChainRecord]
    head: ChainHead
    seq: int
    kind: TamperKind
    checked: int
    # False when the tamper is only visible through the chain head.
    needs_head: bool = False


@st.composite
def logs(draw: st.DrawFn, min_size: int = 1, max_size: int = 40) -> Log:
    bodies = draw(st.lists(contents, min_size=min_size, max_size=max_size))
    rotate_at = draw(st.integers(0, len(bodies)))
    rotated = RING.with_active("k-2025")
    records: list[ChainRecord] = []
    prev = GENESIS_HASH
    for seq, canonical in enumerate(bodies):
        digest = chain_hash(prev, seq, canonical)
        key_id, signature = (RING if seq < rotate_at else rotated).sign(digest)
        records.append(ChainRecord(seq, prev, digest, canonical, key_id, signature))
        prev = digest
    return Log(records, ChainHead(len(records), prev))


def _forge(draw: Draw, seq: int, prev_hash: bytes) -> ChainRecord:
    canonical = draw(contents)
    digest = chain_hash(prev_hash, seq, canonical)
    if draw(st.booleans()):
        key_id = draw(st.sampled_from(["k-2024", "k-2025", "k-evil"]))
        signature = draw(st.binary(min_size=32, max_size=32))
    else:
        key_id, signature = ATTACKER.with_active(draw(st.sampled_from(ATTACKER.key_ids))).sign(
            digest
        )
    return ChainRecord(seq, prev_hash, digest, canonical, key_id, signature)


def _flip(draw: Draw, data: bytes) -> bytes:
    changed = bytearray(data)
    changed[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(changed)


def _renumber(records: Sequence[ChainRecord], delta: int) -> list[ChainRecord]:
    return [dataclasses.replace(r, seq=r.seq + delta) for r in records]


def _prev_of(records: Sequence[ChainRecord], k: int) -> bytes:
    return records[k - 1].hash if k else GENESIS_HASH


# --- single tampers -----------------------------------------------------------


def modify_field(draw: Draw, log: Log) -> Tampered:
    records = list(log.records)
    k = draw(st.integers(0, len(records) - 1))
    row = records[k]
    field = draw(
        st.sampled_from(["canonical", "hash", "prev_hash", "signature", "key_id", "consistent"])
    )
    if field == "key_id":
        changed = dataclasses.replace(row, key_id="k-2025" if row.key_id == "k-2024" else "k-2024")
    elif field == "consistent":
        changed = dataclasses.replace(row, consistent=False)
    elif field == "canonical":
        changed = dataclasses.replace(row, canonical=_flip(draw, row.canonical))
    elif field == "hash":
        changed = dataclasses.replace(row, hash=_flip(draw, row.hash))
    elif field == "prev_hash":
        changed = dataclasses.replace(row, prev_hash=_flip(draw, row.prev_hash))
    else:
        changed = dataclasses.replace(row, signature=_flip(draw, row.signature))
    records[k] = changed
    return Tampered(records, log.head, k, TamperKind.MODIFIED, k)


def modify_head_hash(draw: Draw, log: Log) -> Tampered:
    n = len(log.records)
    head = ChainHead(n, _flip(draw, log.head.head_hash))
    return Tampered(log.records, head, n - 1, TamperKind.MODIFIED, n, needs_head=True)


def delete_row(draw: Draw, log: Log) -> Tampered:
    records = list(log.records)
    if len(records) == 1:
        # Deleting the newest row leaves no gap: that is a truncation.
        return truncate(draw, log)
    k = draw(st.integers(0, len(records) - 2))
    del records[k]
    return Tampered(records, log.head, k, TamperKind.DELETED, k)


def delete_row_and_renumber(draw: Draw, log: Log) -> Tampered:
    records = log.records
    if len(records) == 1:
        return truncate(draw, log)
    k = draw(st.integers(0, len(records) - 2))
    tampered = records[:k] + _renumber(records[k + 1 :], -1)
    return Tampered(tampered, log.head, k, TamperKind.DELETED, k)


def truncate(draw: Draw, log: Log) -> Tampered:
    k = draw(st.integers(0, len(log.records) - 1))
    return Tampered(log.records[:k], log.head, k, TamperKind.TRUNCATED, k, needs_head=True)


def insert_duplicate_seq(draw: Draw, log: Log) -> Tampered:
    records = list(log.records)
    k = draw(st.integers(0, len(records) - 1))
    forged = _forge(draw, k, _prev_of(records, k))
    # Rows sharing a seq come back in either order.
    if draw(st.booleans()):
        records.insert(k, forged)
        return Tampered(records, log.head, k, TamperKind.INSERTED, k)
    records.insert(k + 1, forged)
    return Tampered(records, log.head, k, TamperKind.INSERTED, k + 1)


def insert_and_renumber(draw: Draw, log: Log) -> Tampered:
    records = log.records
    k = draw(st.integers(0, len(records) - 1))
    forged = _forge(draw, k, _prev_of(records, k))
    tampered = [*records[:k], forged, *_renumber(records[k:], +1)]
    return Tampered(tampered, log.head, k, TamperKind.INSERTED, k)


def append_beyond_head(draw: Draw, log: Log) -> Tampered:
    n = len(log.records)
    forged = _forge(draw, n, log.records[-1].hash)
    return Tampered([*log.records, forged], log.head, n, TamperKind.INSERTED, n, needs_head=True)


def roll_back_head(draw: Draw, log: Log) -> Tampered:
    n = len(log.records)
    m = draw(st.integers(0, n - 1))
    head = ChainHead(m, _prev_of(log.records, m))
    return Tampered(log.records, head, m, TamperKind.INSERTED, n, needs_head=True)


def swap_rows(draw: Draw, log: Log) -> Tampered:
    records = list(log.records)
    n = len(records)
    if n < 2:
        return modify_field(draw, log)
    a = draw(st.integers(0, n - 2))
    b = draw(st.integers(a + 1, n - 1))
    records[a], records[b] = (
        dataclasses.replace(records[b], seq=a),
        dataclasses.replace(records[a], seq=b),
    )
    return Tampered(records, log.head, a, TamperKind.REORDERED, a)


TAMPERS: list[Callable[[Draw, Log], Tampered]] = [
    modify_field,
    modify_head_hash,
    delete_row,
    delete_row_and_renumber,
    truncate,
    insert_duplicate_seq,
    insert_and_renumber,
    append_beyond_head,
    roll_back_head,
    swap_rows,
]


def _run_async(records: Sequence[ChainRecord], head: ChainHead | None) -> VerificationResult:
    async def rows() -> AsyncIterator[ChainRecord]:
        for record in records:
            yield record

    return asyncio.run(verify_chain_async(rows(), head, RING))


def _where(result: VerificationResult) -> tuple[int | None, TamperKind | None]:
    return result.first_broken_seq, result.kind


@settings(max_examples=300, deadline=None)
@given(logs(min_size=0))
def test_untampered_log_is_valid(log: Log) -> None:
    result = verify_chain(log.records, log.head, RING)
    assert result.valid, result.detail
    assert (result.checked, result.first_broken_seq, result.kind) == (len(log.records), None, None)
    assert verify_chain(log.records, None, RING).valid


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda tamper: tamper.__name__)
@settings(max_examples=300, deadline=None)
@given(log=logs(), data=st.data())
def test_single_tamper_is_found_and_named(
    tamper: Callable[[Draw, Log], Tampered], log: Log, data: st.DataObject
) -> None:
    case = tamper(data.draw, log)
    result = verify_chain(case.records, case.head, RING)

    assert not result.valid, result.detail
    assert _where(result) == (case.seq, case.kind), result.detail
    assert result.checked == case.checked
    assert _run_async(case.records, case.head) == result
    if not case.needs_head:
        assert _where(verify_chain(case.records, None, RING)) == (case.seq, case.kind)


@settings(max_examples=300, deadline=None)
@given(log=logs(min_size=2), data=st.data())
def test_swap_partner_beyond_the_window_is_reported_as_modified(
    log: Log, data: st.DataObject
) -> None:
    records = list(log.records)
    n = len(records)
    a = data.draw(st.integers(0, n - 2))
    b = data.draw(st.integers(a + 1, n - 1))
    window = data.draw(st.integers(0, n))
    records[a], records[b] = (
        dataclasses.replace(records[b], seq=a),
        dataclasses.replace(records[a], seq=b),
    )
    if b - a <= window:
        expected = TamperKind.REORDERED
    elif b == a + 1:
        # With nothing read past the break, the row at a is the genuine a + 1.
        expected = TamperKind.DELETED
    else:
        expected = TamperKind.MODIFIED
    result = verify_chain(records, log.head, RING, window=window)
    assert _where(result) == (a, expected), result.detail


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            ChainRecord,
            seq=st.integers(-(2**64), 2**64),
            prev_hash=st.binary(max_size=40),
            hash=st.binary(max_size=40),
            canonical=st.binary(max_size=20),
            key_id=st.sampled_from(["k-2024", "k-2025", "", "x" * 200]),
            signature=st.binary(max_size=40),
            consistent=st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
    st.none() | st.builds(ChainHead, st.integers(0, 10), st.binary(max_size=40)),
    st.integers(0, 4),
)
def test_arbitrary_rows_are_classified_never_raised(
    records: list[ChainRecord], head: ChainHead | None, window: int
) -> None:
    result = verify_chain(records, head, RING, window=window)
    assert not result.valid
    assert result.kind is not None
    assert result.first_broken_seq is not None
    assert result.first_broken_seq >= 0
    assert result.checked == 0
