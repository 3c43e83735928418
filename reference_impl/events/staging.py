"""Before the lock: everything of an event's row that does not depend on its place in the chain.

An ingest transaction holds its tenants' chain-head locks from the moment it reads the heads
until it commits, and every other writer of those tenants waits for it. When a burst of one
tenant's events arrives at once, storing them takes the sum of those lock-held times, however
many processes share the work. So what does not depend on the head is computed before the
transaction starts, in the task of the request that brought the event (`stage`): the columns
taken from the content, the idempotency digest, and the event's canonical bytes around the
one member only the commit knows, `recorded_at` (the time of the commit, so that
`recorded_at` never goes back as `seq` goes up). Under the lock the commit puts the time
between the two halves, chains, signs, and writes (`EventRows`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reference_impl.events.repository import EVENT_FIELDS
from reference_impl.events.validation import PreparedEvent, canonical_bytes, sorted_json

__all__ = [
    "CHAIN_COLUMNS",
    "STAGED_COLUMNS",
    "EventRows",
    "StagedEvent",
    "canonical_around",
    "stage",
]

RECORDED_AT = "recorded_at"

# The columns the commit fills under the lock; `stage` fills the event's other columns and
# the index row's digest (`STAGED_COLUMNS`, in this order).
CHAIN_COLUMNS = ("seq", "recorded_at", "canonical", "prev_hash", "hash", "key_id", "signature")
STAGED_COLUMNS = (*(c for c in EVENT_FIELDS if c not in CHAIN_COLUMNS), "content_digest")


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An event with everything computed that its place in the chain does not change.

    Attributes:
        event: The prepared event (its id and idempotency digest).
        head: Canonical bytes of the stored content up to the `recorded_at` value.
        tail: Canonical bytes after it: ``head + recorded_at + tail`` is the stored form.
        columns: Values of `STAGED_COLUMNS`, in that order.
    """

    event: PreparedEvent
    head: bytes
    tail: bytes
    columns: tuple[Any, ...]

    def canonical(self, recorded_at: bytes) -> bytes:
        """The stored canonical bytes with ``recorded_at`` (its RFC 3339 text, ASCII)."""
        return self.head + recorded_at + self.tail


# --8<-- [start:canonical-around]
def canonical_around(content: dict[str, Any], plain_json: bool) -> tuple[bytes, bytes]:
    """RFC 8785 bytes of ``content`` with a `recorded_at` string member, split at its value.

    RFC 8785 writes an object's members in the order of their names (UTF-16 code units),
    each member's text independent of the others, so the canonical form of the whole is the
    members before `recorded_at`, that member, and the members after it. Comparing a name
    with the ASCII name `recorded_at` gives the same answer by code points (Python's order)
    as by UTF-16 code units: they can differ only where both strings have characters above
    U+007F. ``plain_json``: the content is plain JSON (`PreparedEvent.plain_json`), whose
    canonical form orjson writes.

    Raises:
        ValueError: ``content`` already has a `recorded_at` member.
        CanonicalizationError: ``content`` has no canonical form.
    """
    if RECORDED_AT in content:
        raise ValueError("recorded_at is assigned by the service")
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in content.items():
        (before if name < RECORDED_AT else after)[name] = value
    serialise = sorted_json if plain_json else canonical_bytes
    members_before = serialise(before)[1:-1] if before else b""
    members_after = serialise(after)[1:-1] if after else b""
    head = b"{" + members_before + (b"," if before else b"") + b'"recorded_at":"'
    tail = b'"' + (b"," if after else b"") + members_after + b"}"
    return head, tail


# --8<-- [end:canonical-around]


def stage(tenant: str, events: Sequence[PreparedEvent]) -> list[StagedEvent]:
    """Stage ``tenant``'s ``events`` (their configured fields already encrypted)."""
    staged = []
    for ev in events:
        content = ev.content
        head, tail = canonical_around({**content, "tenant": tenant}, ev.plain_json)
        columns = (
            tenant,
            ev.event_id,
            datetime.fromisoformat(content["occurred_at"]),
            content["action"],
            content["category"],
            content["outcome"],
            content["data_classification"],
            content["principal"]["id"],
            content["target"].get("subject_id"),
            ev.digest,
        )
        staged.append(StagedEvent(ev, head, tail, columns))
    return staged


@dataclass(slots=True)
class EventRows:
    """The rows one ingest transaction writes, column by column, as the write sends them.

    Each event is one row of `audit_events` and one of `audit_event_index`; both are made
    of these columns. Every row of a transaction has the same `recorded_at`.
    """

    recorded_at: datetime
    staged: list[tuple[Any, ...]] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    canonical: list[bytes] = field(default_factory=list)
    prev_hash: list[bytes] = field(default_factory=list)
    hash: list[bytes] = field(default_factory=list)
    key_id: list[str] = field(default_factory=list)
    signature: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    def leaves(self) -> Iterator[tuple[str, int, bytes]]:
        """``(tenant, seq, canonical)`` of each row: what the Merkle tree appends."""
        return zip((cols[0] for cols in self.staged), self.seq, self.canonical, strict=True)

    def as_dicts(self) -> list[dict[str, Any]]:
        """One mapping of column name to value per row (for COPY and for tests)."""
        names = (*STAGED_COLUMNS, "seq", "recorded_at", "canonical", "prev_hash", "hash")
        out = []
        for i, cols in enumerate(self.staged):
            values = (
                *cols,
                self.seq[i],
                self.recorded_at,
                self.canonical[i],
                self.prev_hash[i],
                self.hash[i],
            )
            row = dict(zip(names, values, strict=True))
            row["key_id"] = self.key_id[i]
            row["signature"] = self.signature[i]
            out.append(row)
        return out
