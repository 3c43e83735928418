"""Seq assignment, idempotency and conflicts of a group commit, without a database."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from reference_impl.core.errors import ConflictError
from reference_impl.core.settings import Settings
from reference_impl.events.ingest import BatchPlan
from reference_impl.events.ingest import plan_batch as plan_prepared
from reference_impl.events.repository import EVENT_FIELDS, IndexEntry
from reference_impl.events.staging import CHAIN_COLUMNS, STAGED_COLUMNS, stage
from reference_impl.events.validation import PreparedEvent, parse_event
from reference_impl.integrity import GENESIS_HASH, ChainHead, KeyRing, chain_hash
from tests.support.events import make_event

KEYRING = KeyRing({"k1": b"s" * 32}, "k1")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _prepared(**overrides: object) -> PreparedEvent:
    return parse_event(json.dumps(make_event(**overrides)).encode(), Settings())


def _head(n: int = 0, h: bytes = GENESIS_HASH) -> ChainHead:
    return ChainHead(next_seq=n, head_hash=h)


def plan_batch(
    requests: list[tuple[str, list[PreparedEvent]]],
    heads: dict[str, ChainHead],
    existing: dict[tuple[str, Any], IndexEntry],
    keyring: KeyRing,
    now: datetime,
) -> BatchPlan:
    """`plan_batch` of requests staged as the committer stages them."""
    staged = [(tenant, stage(tenant, events)) for tenant, events in requests]
    return plan_prepared(staged, heads, existing, keyring, now)


def test_seqs_continue_from_the_head_and_chain_links() -> None:
    events = [_prepared() for _ in range(3)]
    plan = plan_batch([("t", events)], {"t": _head(5, b"\x01" * 32)}, {}, KEYRING, NOW)
    rows = plan.rows.as_dicts()
    assert [r["seq"] for r in rows] == [5, 6, 7]
    assert rows[0]["prev_hash"] == b"\x01" * 32
    for prev, row in itertools.pairwise(rows):
        assert row["prev_hash"] == prev["hash"]
    for row in rows:
        assert row["hash"] == chain_hash(row["prev_hash"], row["seq"], row["canonical"])
        assert KEYRING.verify(row["key_id"], row["hash"], row["signature"])
    assert plan.heads == {"t": ChainHead(8, rows[-1]["hash"])}


def test_tenants_have_separate_chains() -> None:
    plan = plan_batch(
        [("a", [_prepared()]), ("b", [_prepared()]), ("a", [_prepared()])],
        {"a": _head(), "b": _head(3)},
        {},
        KEYRING,
        NOW,
    )
    assert [(r["tenant_id"], r["seq"]) for r in plan.rows.as_dicts()] == [
        ("a", 0),
        ("b", 3),
        ("a", 1),
    ]


def test_canonical_covers_tenant_and_recorded_at() -> None:
    plan = plan_batch([("t", [_prepared()])], {"t": _head()}, {}, KEYRING, NOW)
    content = json.loads(plan.rows.as_dicts()[0]["canonical"])
    assert content["tenant"] == "t"
    assert content["recorded_at"] == "2026-11-23T12:00:00.000000Z"


def test_stored_duplicate_gets_its_original_receipt() -> None:
    ev = _prepared()
    entry = IndexEntry(
        tenant_id="t",
        event_id=ev.event_id,
        seq=9,
        recorded_at=NOW,
        content_digest=ev.digest,
        hash=b"\x02" * 32,
        key_id="old",
    )
    plan = plan_batch([("t", [ev])], {"t": _head(10)}, {("t", ev.event_id): entry}, KEYRING, NOW)
    [[result]] = plan.outcomes  # type: ignore[misc]
    assert not result.created
    assert (result.receipt.seq, result.receipt.key_id) == (9, "old")
    assert len(plan.rows) == 0 and plan.heads == {}


def test_conflicting_request_is_skipped_whole_others_proceed() -> None:
    stored = _prepared()
    entry = IndexEntry("t", stored.event_id, 0, NOW, b"\x00" * 32, b"\x03" * 32, "k1")
    good = [_prepared()]
    bad = [_prepared(), stored]
    plan = plan_batch(
        [("t", bad), ("t", good)], {"t": _head(1)}, {("t", stored.event_id): entry}, KEYRING, NOW
    )
    assert isinstance(plan.outcomes[0], ConflictError)
    assert [r["seq"] for r in plan.rows.as_dicts()] == [1]
    assert plan.rows.as_dicts()[0]["event_id"] == good[0].event_id


def test_same_id_twice_in_one_batch() -> None:
    ev = _prepared()
    plan = plan_batch([("t", [ev, ev])], {"t": _head()}, {}, KEYRING, NOW)
    [results] = plan.outcomes
    assert [r.created for r in results] == [True, False]  # type: ignore[union-attr]
    other = PreparedEvent(ev.event_id, {**ev.content, "outcome": "failure"}, ev.digest[::-1])
    plan = plan_batch([("t", [ev, other])], {"t": _head()}, {}, KEYRING, NOW)
    assert isinstance(plan.outcomes[0], ConflictError)


def test_same_id_in_two_requests_of_one_batch() -> None:
    ev = _prepared()
    plan = plan_batch([("t", [ev]), ("t", [ev])], {"t": _head()}, {}, KEYRING, NOW)
    first, second = plan.outcomes
    assert first[0].created and not second[0].created  # type: ignore[index]
    assert first[0].receipt == second[0].receipt  # type: ignore[index]


def test_the_staged_and_the_chain_columns_are_every_column_once() -> None:
    # `stage` fills what the chain does not; together, the event row and the digest.
    assert sorted((*STAGED_COLUMNS, *CHAIN_COLUMNS)) == sorted((*EVENT_FIELDS, "content_digest"))
    rows = plan_batch([("t", [_prepared()])], {"t": _head()}, {}, KEYRING, NOW).rows
    assert set(rows.as_dicts()[0]) == {*EVENT_FIELDS, "content_digest"}


def test_an_event_staged_for_another_tenant_is_refused() -> None:
    # The staged canonical bytes and columns carry the tenant: they must be the request's.
    staged = stage("a", [_prepared()])
    with pytest.raises(ValueError, match="another tenant"):
        plan_prepared([("b", staged)], {"b": _head()}, {}, KEYRING, NOW)
