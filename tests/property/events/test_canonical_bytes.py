"""The ingest path's canonical bytes are the RFC 8785 reference's, byte for byte.

`canonical_bytes` serialises the common shape of an event with orjson and hands everything
else to the `rfc8785` package. Every chain hash and Merkle leaf is computed over these
bytes, so any difference from the reference would be a verification failure waiting to
happen: the reference decides, on arbitrary JSON and on the corners where orjson and
RFC 8785 disagree (floats, non-ASCII member names, UTF-16 ordering, lone surrogates,
integers beyond the I-JSON range).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_impl.core.errors import AuditError
from reference_impl.core.settings import Settings
from reference_impl.events.ingest import plan_batch
from reference_impl.events.staging import canonical_around, stage
from reference_impl.events.validation import (
    canonical_bytes,
    canonical_form,
    content_digest,
    parse_event,
    sorted_json,
)
from reference_impl.integrity import (
    GENESIS_HASH,
    CanonicalizationError,
    ChainHead,
    KeyRing,
    canonicalize,
)
from tests.support.events import make_event

pytestmark = pytest.mark.property

SAFE_INT = 2**53 - 1

# Names that sort differently by code point and by UTF-16 code unit, controls, escapes.
tricky_text = st.sampled_from(
    ["", "a", "\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\ue000", "\U0001f600", "é"]
)
texts = st.text() | tricky_text
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE_INT - 3, max_value=SAFE_INT + 3)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(texts, children, max_size=5)
        | st.dictionaries(st.text(alphabet="abcXYZ_-0", max_size=4), children, max_size=5)
    ),
    max_leaves=40,
)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return canonicalize(value)
    except CanonicalizationError:
        return CanonicalizationError


def _fast(value: Any) -> bytes | type[Exception]:
    try:
        return canonical_bytes(value)
    except CanonicalizationError:
        return CanonicalizationError


@settings(max_examples=1500, deadline=None)
@given(json_values)
@example({"\ue000": 1, "\U0001f600": 2})
@example({"b": [1.0, 1e21, -0.0, 5e-324], "a": "\ud800"})
@example({"n": 2**53, "m": -(2**53)})
@example([{"z": None, "y": True, "x": "\u2028\x00"}])
def test_canonical_bytes_agree_with_the_reference(value: Any) -> None:
    assert _fast(value) == _reference(value)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "action": st.from_regex(r"\A[a-z][a-z0-9_]{0,8}(\.[a-z0-9_]{1,8}){1,3}\Z"),
            "reason": st.text(max_size=40),
            "count": st.integers(min_value=-SAFE_INT, max_value=SAFE_INT),
        }
    )
)
def test_events_the_api_accepts_take_the_fast_path_and_match(fields: dict[str, Any]) -> None:
    details = {"reason": fields["reason"], "n": fields["count"]}
    body = make_event(action=fields["action"], details=details)
    try:
        prepared = parse_event(json.dumps(body).encode(), Settings())
    except AuditError:  # refused by the API: nothing to compare
        return
    assert canonical_bytes(prepared.content) == rfc8785.dumps(prepared.content)
    # The commit adds the tenant and the time and serialises without a second check.
    assert prepared.plain_json
    plan = plan_batch(
        [("tenant-a", stage("tenant-a", [prepared]))],
        {"tenant-a": ChainHead(0, GENESIS_HASH)},
        {},
        KeyRing({"k": b"k" * 32}, "k"),
        datetime(2026, 11, 24, tzinfo=UTC),
    )
    stored = {
        **prepared.content,
        "tenant": "tenant-a",
        "recorded_at": "2026-11-24T00:00:00.000000Z",
    }
    assert plan.rows.canonical[0] == rfc8785.dumps(stored)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(texts, json_values, max_size=8), texts)
@example({}, "x")
@example({"a": 1}, "x")
@example({"z": 1}, "x")
@example({"recorded_a": 1, "recorded_b": 2, "\ue000": 3, "\U0001f600": 4}, "x")
@example({"f": 1.5, "é": "x"}, "2026-11-24T00:00:00.000000Z")
def test_the_halves_around_recorded_at_make_the_canonical_form(
    content: dict[str, Any], recorded_at: str
) -> None:
    # The commit joins the staged halves around the time; the reference decides.
    content.pop("recorded_at", None)
    try:
        expected = rfc8785.dumps({**content, "recorded_at": recorded_at})
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonical_around(content, plain_json=False)
        return
    plain = canonical_form(content)[1]
    head, tail = canonical_around(content, plain_json=plain)
    assert head + rfc8785.dumps(recorded_at)[1:-1] + tail == expected


def test_content_with_its_own_recorded_at_is_refused() -> None:
    with pytest.raises(ValueError, match="assigned by the service"):
        canonical_around({"recorded_at": "x"}, plain_json=True)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(texts, json_values, max_size=6), texts)
@example({"f": 1.5}, "x")
@example({"\u00e9": "x"}, "x")
@example({"n": 2**53}, "x")
@example({"s": "\ud800"}, "x")
def test_checking_only_details_decides_as_checking_the_whole_event(
    details: dict[str, Any], reason: str
) -> None:
    body = make_event(details=details, outcome_description=reason)
    try:
        prepared = parse_event(json.dumps(body).encode(), Settings())
    except AuditError:  # refused by the API: nothing to compare
        return
    canonical, plain = canonical_form(prepared.content)
    assert prepared.plain_json == plain
    assert prepared.digest == content_digest(canonical, None)


ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@settings(max_examples=800, deadline=None)
@given(
    st.dictionaries(st.text(alphabet="abcXYZ_-0", max_size=4), json_values, max_size=6),
    ascii_text,
    ascii_text,
)
def test_plain_json_stays_plain_when_string_members_are_added(
    value: dict[str, Any], tenant: str, recorded_at: str
) -> None:
    try:
        canonical, plain = canonical_form(value)
    except CanonicalizationError:
        return  # no canonical form: refused before anything is stored
    assert canonical == _reference(value)
    if not plain:
        return
    stored = {**value, "tenant": tenant, "recorded_at": recorded_at}
    assert sorted_json(stored) == canonicalize(stored)


def test_nesting_beyond_the_reference_limit_is_refused_alike() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    assert _fast(deep) is CanonicalizationError
    assert _reference(deep) is CanonicalizationError
