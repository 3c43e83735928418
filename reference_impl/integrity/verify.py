"""Chain verification: find the first broken seq of a tenant's log and say how it broke.

**Tamper model.**
The attacker can change any stored row and the chain head: edit columns, delete
rows, insert rows, renumber ``seq`` values and recompute SHA-256 hashes. The
attacker does not hold the HMAC secrets, so every row the attacker writes or
re-links carries a signature that does not verify. Rows are read in stored
``seq`` order; row ``s`` must have ``seq == s``, link to the hash of row
``s - 1`` (``GENESIS_HASH`` for seq 0), hash to its stored ``hash`` and carry a
valid signature over that hash. A row is *authentic at* seq ``j`` when
``chain_hash(row.prev_hash, j, row.canonical) == row.hash``, its signature
verifies and its queryable columns agree with its canonical bytes: it is an
untouched row, although perhaps not where it belongs.

The first row that does not fit, at expected seq ``k``, is classified:

* **truncated** — the rows end while the chain head counts more;
* **deleted** — there is a gap in ``seq``, or the row at ``k`` is the genuine row
  ``k + 1`` renumbered down;
* **inserted** — a second row carries an already verified seq, a forged row sits
  at ``k`` while the genuine row ``k`` follows it, or rows lie beyond the head;
* **reordered** — the row at ``k`` and the genuine row ``k`` are both authentic
  but have exchanged positions;
* **modified** — anything else: canonical bytes, hash, previous-hash link,
  signature, key id or a queryable column changed, or the head hash is wrong.

Rows after the first break are not trusted, so only that break is reported; it
is the one that tells how far the log can still be relied on.

**Limits.**
Classification looks ahead at most ``window`` rows past the break. When the
genuine row for ``k`` sits further away than that (a swap of two distant rows,
or a forged row followed by a long run of renumbered rows), it is reported as
**modified** at ``k``: the seq is right, the kind is less specific. Without a
chain head, a truncation of the newest rows and rows appended after the last one
cannot be told from a shorter genuine log; the head, or a signed checkpoint,
is what closes that gap.

The verifier is push-style: a driver feeds records one by one from any source
(a synchronous cursor, an async stream, a file) and stops reading once
``needs_more`` is false. While the chain is good it keeps only the expected
seq and previous hash, so memory stays constant over millions of rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from reference_impl.integrity.chain import GENESIS_HASH, HASH_SIZE, MAX_SEQ, chain_hash
from reference_impl.integrity.signing import KeyRing

__all__ = [
    "DEFAULT_WINDOW",
    "PROGRESS_INTERVAL",
    "ChainHead",
    "ChainRecord",
    "ChainVerifier",
    "TamperKind",
    "VerificationResult",
    "verify_chain",
    "verify_chain_async",
]

DEFAULT_WINDOW: Final = 1024
"""Rows read past a break to classify it."""

PROGRESS_INTERVAL: Final = 1024
"""Rows between two calls of a ``progress`` callback."""

# Key ids come from the rows being verified and may be attacker-written; a
# bounded repr keeps a hostile one from flooding logs.
_MAX_KEY_ID_SHOWN: Final = 64


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One stored row of a tenant's log, as read from storage.

    Attributes:
        seq: The stored sequence number.
        prev_hash: The stored hash of the previous row.
        hash: The stored chain hash of this row.
        canonical: The stored RFC 8785 canonical bytes; left out of ``repr``
            because they may hold protected health information.
        key_id: The stored id of the signing key.
        signature: The stored signature over ``hash``.
        consistent: ``False`` when the reader found the row's queryable columns
            disagreeing with its canonical bytes, i.e. a projected column was
            changed.
    """

    seq: int
    prev_hash: bytes
    hash: bytes
    canonical: bytes = field(repr=False)
    key_id: str
    signature: bytes
    consistent: bool = True


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The chain head stored beside a tenant's rows.

    Attributes:
        next_seq: The next seq to assign, i.e. how many rows the log holds.
        head_hash: Hash of the last row, ``GENESIS_HASH`` when the log is empty.
    """

    next_seq: int
    head_hash: bytes

    def __post_init__(self) -> None:
        """Reject a head that cannot describe any log.

        Raises:
            ValueError: If ``next_seq`` is negative.
        """
        if self.next_seq < 0:
            raise ValueError(f"next_seq must not be negative, got {self.next_seq}")


class TamperKind(StrEnum):
    """How a chain broke at its first broken seq."""

    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The outcome of verifying one tenant's log.

    Attributes:
        valid: Whether the whole log verified.
        checked: Rows, from seq 0 on, that fit the chain before the first one
            that did not (all rows when none broke it).
        first_broken_seq: The first seq that is not intact, or ``None``.
        kind: How the chain broke there, or ``None``.
        detail: One sentence for people; it may name seq numbers and key ids,
            never event content.
    """

    valid: bool
    checked: int
    first_broken_seq: int | None
    kind: TamperKind | None
    detail: str


class ChainVerifier:
    """Streaming verifier for one tenant's log.

    Feed records in stored seq order, stop when ``needs_more`` turns false (or
    the records run out), then call ``finish`` with the chain head.
    [`verify_chain`][reference_impl.integrity.verify.verify_chain] and
    [`verify_chain_async`][reference_impl.integrity.verify.verify_chain_async]
    are such drivers.
    """

    __slots__ = (
        "_break",
        "_expected_seq",
        "_finished",
        "_keyring",
        "_lookahead",
        "_prev_hash",
        "_window",
    )

    def __init__(self, keyring: KeyRing, *, window: int = DEFAULT_WINDOW) -> None:
        """Create a verifier.

        Args:
            keyring: Holds every key that signed any row of the log.
            window: Rows kept past the first break to classify it.

        Raises:
            ValueError: If ``window`` is negative.
        """
        if window < 0:
            raise ValueError(f"window must not be negative, got {window}")
        self._keyring = keyring
        self._window = window
        self._expected_seq = 0
        self._prev_hash = GENESIS_HASH
        self._break: ChainRecord | None = None
        self._lookahead: list[ChainRecord] = []
        self._finished = False

    @property
    def checked(self) -> int:
        """Rows that fit the chain so far."""
        return self._expected_seq

    @property
    def needs_more(self) -> bool:
        """Whether another record could still change the result.

        False once a break was found and the lookahead window is full, so a
        driver can stop reading.
        """
        if self._finished:
            return False
        return self._break is None or len(self._lookahead) < self._window

    def feed(self, record: ChainRecord) -> None:
        """Consume the next record in stored seq order.

        Records fed once the window is full are ignored.

        Args:
            record: The next stored row.

        Raises:
            RuntimeError: If ``finish`` was already called.
        """
        if self._finished:
            raise RuntimeError("the verifier has already finished")
        if self._break is None:
            if _fits(record, self._expected_seq, self._prev_hash, self._keyring):
                self._expected_seq += 1
                self._prev_hash = record.hash
            else:
                self._break = record
        elif len(self._lookahead) < self._window:
            self._lookahead.append(record)

    def finish(self, head: ChainHead | None) -> VerificationResult:
        """Classify what was fed and return the result.

        Args:
            head: The stored chain head, or ``None`` when there is none; without
                it a missing tail or rows past the end go unnoticed.

        Returns:
            The verification result.

        Raises:
            RuntimeError: If called twice.
        """
        if self._finished:
            raise RuntimeError("the verifier has already finished")
        self._finished = True
        checked = self._expected_seq
        brk = self._break
        if brk is not None and brk.seq < checked:
            return _classify_duplicate(brk, checked, head)
        if head is not None:
            verdict = _check_head(head, checked, self._prev_hash, brk is not None)
            if verdict is not None:
                return verdict
        if brk is None:
            return VerificationResult(
                valid=True,
                checked=checked,
                first_broken_seq=None,
                kind=None,
                detail=f"All {checked} records verified.",
            )
        return _classify_break(brk, self._lookahead, checked, self._prev_hash, self._keyring)


def verify_chain(
    records: Iterable[ChainRecord],
    head: ChainHead | None,
    keyring: KeyRing,
    *,
    window: int = DEFAULT_WINDOW,
    progress: Callable[[int], None] | None = None,
) -> VerificationResult:
    """Verify a log read from a synchronous source.

    Args:
        records: Rows in stored seq order; reading stops soon after a break.
        head: The stored chain head, or ``None``.
        keyring: Holds every key that signed any row of the log.
        window: Rows kept past the first break to classify it.
        progress: Called with the number of rows read, every
            ``PROGRESS_INTERVAL`` rows and once at the end.

    Returns:
        The verification result.
    """
    verifier = ChainVerifier(keyring, window=window)
    read = 0
    for record in records:
        verifier.feed(record)
        read += 1
        if progress is not None and read % PROGRESS_INTERVAL == 0:
            progress(read)
        if not verifier.needs_more:
            break
    if progress is not None:
        progress(read)
    return verifier.finish(head)


async def verify_chain_async(
    records: AsyncIterable[ChainRecord],
    head: ChainHead | None,
    keyring: KeyRing,
    *,
    window: int = DEFAULT_WINDOW,
    progress: Callable[[int], None] | None = None,
) -> VerificationResult:
    """Verify a log read from an asynchronous source, e.g. a streamed cursor.

    Args:
        records: Rows in stored seq order; reading stops soon after a break.
        head: The stored chain head, or ``None``.
        keyring: Holds every key that signed any row of the log.
        window: Rows kept past the first break to classify it.
        progress: Called with the number of rows read, every
            ``PROGRESS_INTERVAL`` rows and once at the end.

    Returns:
        The verification result.
    """
    verifier = ChainVerifier(keyring, window=window)
    read = 0
    async for record in records:
        verifier.feed(record)
        read += 1
        if progress is not None and read % PROGRESS_INTERVAL == 0:
            progress(read)
        if not verifier.needs_more:
            break
    if progress is not None:
        progress(read)
    return verifier.finish(head)


# --- record checks ---------------------------------------------------------


def _hash_at(record: ChainRecord, seq: int, prev_hash: bytes) -> bytes | None:
    """Chain hash of the record's content at ``seq``, or None if none can exist."""
    # Tampered rows may hold any prev_hash length or seq; they must classify,
    # not raise.
    if not 0 <= seq <= MAX_SEQ or len(prev_hash) != HASH_SIZE:
        return None
    return chain_hash(prev_hash, seq, record.canonical)


def _authentic_at(record: ChainRecord, seq: int, keyring: KeyRing) -> bool:
    """Whether the record is an untouched row that belongs at ``seq``."""
    return (
        record.consistent
        and _hash_at(record, seq, record.prev_hash) == record.hash
        and keyring.verify(record.key_id, record.hash, record.signature)
    )


def _fits(record: ChainRecord, seq: int, prev_hash: bytes, keyring: KeyRing) -> bool:
    """Whether the record is the valid next link after ``prev_hash``."""
    return (
        record.seq == seq and record.prev_hash == prev_hash and _authentic_at(record, seq, keyring)
    )


def _misfit_reason(record: ChainRecord, seq: int, prev_hash: bytes, keyring: KeyRing) -> str:
    """Name the first check a record at its own seq fails, for the detail."""
    if record.prev_hash != prev_hash:
        if seq == 0:
            return "its previous hash is not the genesis hash"
        return f"its previous hash does not match the hash of seq {seq - 1}"
    if _hash_at(record, seq, prev_hash) != record.hash:
        return "its hash does not match its canonical bytes"
    key_id = _show_key_id(record.key_id)
    if record.key_id not in keyring:
        return f"its key id {key_id} is not in the key ring"
    if not keyring.verify(record.key_id, record.hash, record.signature):
        return f"its signature does not verify with key {key_id}"
    return "its queryable columns disagree with its canonical bytes"


def _show_key_id(key_id: str) -> str:
    shown = repr(key_id)
    if len(shown) > _MAX_KEY_ID_SHOWN:
        return shown[: _MAX_KEY_ID_SHOWN - 3] + "..."
    return shown


def _find_genuine(
    candidates: Sequence[ChainRecord], seq: int, prev_hash: bytes, keyring: KeyRing
) -> ChainRecord | None:
    """The first candidate that is the untouched row for ``seq`` after ``prev_hash``."""
    for candidate in candidates:
        if candidate.prev_hash == prev_hash and _authentic_at(candidate, seq, keyring):
            return candidate
    return None


# --- classification --------------------------------------------------------


def _broken(kind: TamperKind, seq: int, checked: int, detail: str) -> VerificationResult:
    return VerificationResult(
        valid=False, checked=checked, first_broken_seq=seq, kind=kind, detail=detail
    )


def _check_head(
    head: ChainHead, checked: int, last_hash: bytes, more_rows: bool
) -> VerificationResult | None:
    """Compare the verified prefix with the head; None when the head agrees."""
    if head.next_seq < checked:
        return _broken(
            TamperKind.INSERTED,
            head.next_seq,
            checked,
            f"The chain head ends before seq {head.next_seq}, yet rows from seq "
            f"{head.next_seq} to {checked - 1} are stored beyond it.",
        )
    if head.next_seq == checked:
        if head.head_hash != last_hash:
            return _broken(
                TamperKind.MODIFIED,
                max(checked - 1, 0),
                checked,
                "The chain head hash does not match "
                + (f"the hash of seq {checked - 1}." if checked else "an empty log."),
            )
        if more_rows:
            return _broken(
                TamperKind.INSERTED,
                checked,
                checked,
                f"The chain head ends at seq {checked - 1}, yet a row with seq "
                f"{checked} or later is stored beyond it."
                if checked
                else "The chain head describes an empty log, yet rows are stored.",
            )
        return None
    if not more_rows:
        return _broken(
            TamperKind.TRUNCATED,
            checked,
            checked,
            f"The log ends after {checked} records but the chain head counts "
            f"{head.next_seq}; rows from seq {checked} on are missing.",
        )
    return None


def _classify_duplicate(
    record: ChainRecord, checked: int, head: ChainHead | None
) -> VerificationResult:
    """Rule for a row whose stored seq was already verified (or is negative)."""
    seq = max(record.seq, 0)
    if head is not None and head.next_seq < seq:
        return _broken(
            TamperKind.INSERTED,
            head.next_seq,
            checked,
            f"The chain head ends before seq {head.next_seq}, yet rows from seq "
            f"{head.next_seq} on are stored beyond it.",
        )
    if record.seq < 0:
        detail = f"A row with the invalid seq {record.seq} is stored."
    else:
        detail = (
            f"A second row with seq {record.seq} is stored after seq {checked - 1} was verified."
        )
    return _broken(TamperKind.INSERTED, seq, checked, detail)


def _classify_break(
    brk: ChainRecord,
    lookahead: Sequence[ChainRecord],
    seq: int,
    prev_hash: bytes,
    keyring: KeyRing,
) -> VerificationResult:
    """Classify the first record that does not fit at ``seq`` after ``prev_hash``."""
    if brk.seq > seq:
        return _classify_gap(brk, lookahead, seq, prev_hash, keyring)
    return _classify_misfit(brk, lookahead, seq, prev_hash, keyring)


def _classify_gap(
    brk: ChainRecord,
    lookahead: Sequence[ChainRecord],
    seq: int,
    prev_hash: bytes,
    keyring: KeyRing,
) -> VerificationResult:
    """Rule for a stored seq that skips ahead of the expected one."""
    genuine = _find_genuine([brk, *lookahead], seq, prev_hash, keyring)
    if genuine is not None:
        return _broken(
            TamperKind.REORDERED,
            seq,
            seq,
            f"No row is stored at seq {seq}; the genuine row for seq {seq} is "
            f"stored at seq {genuine.seq}.",
        )
    return _broken(
        TamperKind.DELETED,
        seq,
        seq,
        f"No row is stored at seq {seq}; the next stored row has seq {brk.seq}.",
    )


def _classify_misfit(
    brk: ChainRecord,
    lookahead: Sequence[ChainRecord],
    seq: int,
    prev_hash: bytes,
    keyring: KeyRing,
) -> VerificationResult:
    """Rule for a row stored at the expected seq that does not fit there."""
    genuine = _find_genuine(lookahead, seq, prev_hash, keyring)
    if genuine is not None:
        if _authentic_at(brk, genuine.seq, keyring):
            return _broken(
                TamperKind.REORDERED,
                seq,
                seq,
                f"The rows at seq {seq} and seq {genuine.seq} have exchanged positions.",
            )
        return _broken(
            TamperKind.INSERTED,
            seq,
            seq,
            f"The row at seq {seq} is not authentic, and the genuine row for seq "
            f"{seq} follows it at stored seq {genuine.seq}.",
        )
    if _authentic_at(brk, seq + 1, keyring):
        return _broken(
            TamperKind.DELETED,
            seq,
            seq,
            f"The row for seq {seq} is missing: the row stored at seq {seq} is the "
            f"genuine row for seq {seq + 1}, renumbered.",
        )
    return _broken(
        TamperKind.MODIFIED,
        seq,
        seq,
        f"The row at seq {seq} does not verify: {_misfit_reason(brk, seq, prev_hash, keyring)}.",
    )
