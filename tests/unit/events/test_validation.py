"""Strict parsing, bounds and sanitization of incoming events (no server needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reference_impl.core.errors import PayloadTooLargeError, ValidationFailedError
from reference_impl.core.settings import Settings
from reference_impl.events.sanitize import sanitize_text
from reference_impl.events.validation import content_digest, parse_batch, parse_event
from reference_impl.integrity import canonicalize
from tests.support.events import make_event

SETTINGS = Settings()


def _errors(event: dict[str, Any] | bytes) -> list[dict[str, str]]:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    with pytest.raises(ValidationFailedError) as info:
        parse_event(raw, SETTINGS)
    return [e.as_dict() for e in info.value.errors]


def _pointers(event: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in _errors(event)]


def test_valid_event_is_prepared_with_canonical_bytes() -> None:
    event = make_event()
    prepared = parse_event(json.dumps(event).encode(), SETTINGS)
    assert str(prepared.event_id) == event["event_id"]
    assert prepared.digest == content_digest(canonicalize(prepared.content), None)
    assert prepared.content["occurred_at"].endswith("Z")


def test_equal_instants_have_equal_canonical_bytes() -> None:
    event = make_event(occurred_at="2026-11-23T10:00:00+01:00")
    same = {**event, "occurred_at": "2026-11-23T09:00:00.000000Z"}
    a = parse_event(json.dumps(event).encode(), SETTINGS, now=datetime(2026, 11, 23, 9, tzinfo=UTC))
    b = parse_event(json.dumps(same).encode(), SETTINGS, now=datetime(2026, 11, 23, 9, tzinfo=UTC))
    assert a.digest == b.digest


@pytest.mark.parametrize(
    ("override", "pointer"),
    [
        ({"event_id": "not-a-uuid"}, "/event_id"),
        ({"event_id": 12}, "/event_id"),
        ({"occurred_at": 1700000000}, "/occurred_at"),
        ({"occurred_at": "2026-11-23T10:00:00"}, "/occurred_at"),
        ({"action": "Patient Read"}, "/action"),
        ({"category": "gossip"}, "/category"),
        ({"fhir_action": "X"}, "/fhir_action"),
        ({"outcome": True}, "/outcome"),
        ({"data_classification": "phi"}, "/data_classification"),
        ({"purpose_of_use": "CURIOSITY"}, "/purpose_of_use"),
        ({"principal": {"id": "a b", "type": "user"}}, "/principal/id"),
        ({"principal": {"id": "a", "type": "robot"}}, "/principal/type"),
        ({"principal": {"id": "a\u0000b", "type": "user"}}, "/principal/id"),
        ({"principal": {"id": "x" * 257, "type": "user"}}, "/principal/id"),
        ({"principal": {"id": "a", "type": "user", "roles": ["r"] * 33}}, "/principal/roles"),
        ({"target": {"resource_type": "patient", "resource_id": "1"}}, "/target/resource_type"),
        (
            {"target": {"resource_type": "Patient", "resource_id": "<script>"}},
            "/target/resource_id",
        ),
        ({"session": {"ip_address": "999.1.1.1"}}, "/session/ip_address"),
        ({"session": {"user_agent": "u" * 513}}, "/session/user_agent"),
        ({"outcome_description": "d" * 1025}, "/outcome_description"),
        ({"correlation_id": ""}, "/correlation_id"),
        ({"details": []}, "/details"),
        ({"unexpected": 1}, "/unexpected"),
    ],
)
def test_each_bad_field_is_named_by_pointer(override: dict[str, Any], pointer: str) -> None:
    assert pointer in _pointers(make_event(**override))


def test_every_bad_field_is_reported_at_once() -> None:
    event = make_event(outcome="maybe", category="x", principal={"id": "", "type": "user"})
    assert sorted(_pointers(event)) == ["/category", "/outcome", "/principal/id"]


def test_missing_required_fields() -> None:
    assert "/target" in _pointers(make_event(target=None))
    assert "/event_id" in _pointers(make_event(event_id=None))


def test_details_depth_is_bounded() -> None:
    deep: dict[str, Any] = {"v": 1}
    for _ in range(8):
        deep = {"n": deep}
    # depth 9 counting the outer object
    assert _pointers(make_event(details=deep)) == ["/details/n/n/n/n/n/n/n/n"]
    ok: dict[str, Any] = {"v": 1}
    for _ in range(7):
        ok = {"n": ok}
    parse_event(json.dumps(make_event(details=ok)).encode(), SETTINGS)


@pytest.mark.parametrize(
    ("details", "pointer"),
    [
        ({"big": 2**53}, "/details/big"),
        ({"list": list(range(1001))}, "/details/list"),
        ({"s": "x" * 8193}, "/details/s"),
        ({"k" * 129: 1}, "/details/" + "k" * 129),
        ({"a/b": {"c~d": 2**60}}, "/details/a~1b/c~0d"),
    ],
)
def test_details_bounds(details: dict[str, Any], pointer: str) -> None:
    assert _pointers(make_event(details=details)) == [pointer]


def test_clock_skew_is_bounded() -> None:
    now = datetime.now(UTC)
    future = make_event(occurred_at=(now + timedelta(minutes=10)).isoformat())
    past = make_event(occurred_at=(now - timedelta(days=31)).isoformat())
    assert _errors(future) == [
        {"detail": "more than 300 s ahead of the server clock", "pointer": "/occurred_at"}
    ]
    assert _errors(past) == [{"detail": "older than 30 days", "pointer": "/occurred_at"}]


def test_body_size_bounds() -> None:
    with pytest.raises(PayloadTooLargeError):
        parse_event(b" " * (64 * 1024 + 1), SETTINGS)
    # Under the raw bound, but over it once sanitization expands markup.
    event = make_event(details={f"k{i}": "<" * 8000 for i in range(3)})
    assert _errors(event)[0]["pointer"] == ""


def test_free_text_is_sanitized() -> None:
    raw = make_event(
        outcome_description="Cafe\u0301 <b>bold</b>\r\nline\x07two\u202e",
        session={"user_agent": "agent\x1b[31m"},
        details={"note": "<img src=x onerror=alert(1)>", "<key>": "v"},
    )
    content = parse_event(json.dumps(raw).encode(), SETTINGS).content
    assert content["outcome_description"] == "Café &lt;b&gt;bold&lt;/b&gt;\nlinetwo"
    assert content["session"]["user_agent"] == "agent[31m"
    assert content["details"] == {"note": "&lt;img src=x onerror=alert(1)&gt;", "&lt;key&gt;": "v"}


def test_sanitizing_is_idempotent() -> None:
    text = "a < b & c > d \u0007 e\u0301"
    once = sanitize_text(text)
    assert sanitize_text(once).replace("&amp;", "&") == once.replace("&amp;", "&")
    assert "<" not in once and ">" not in once


def test_identifiers_are_nfc_normalised() -> None:
    decomposed = make_event(principal={"id": "jose\u0301", "type": "user"})
    content = parse_event(json.dumps(decomposed).encode(), SETTINGS).content
    assert content["principal"]["id"] == "jos\u00e9"


def test_batch_pointers_and_limits() -> None:
    batch = {"events": [make_event(), make_event(fhir_action="Z")]}
    with pytest.raises(ValidationFailedError) as info:
        parse_batch(json.dumps(batch).encode(), SETTINGS)
    assert [e.pointer for e in info.value.errors] == ["/events/1/fhir_action"]
    with pytest.raises(ValidationFailedError):
        parse_batch(json.dumps([make_event()]).encode(), SETTINGS)
    small = Settings(max_batch_events=2)
    with pytest.raises(ValidationFailedError):
        parse_batch(json.dumps({"events": [make_event()] * 3}).encode(), small)


def test_problem_text_never_echoes_input() -> None:
    marker = "PATIENT-NAME-Jane-Doe"
    event = make_event(
        event_id=marker, occurred_at=marker, principal={"id": marker + " x", "type": marker}
    )
    assert marker not in json.dumps(_errors(event))


def test_a_prepared_event_with_new_content_keeps_every_other_field() -> None:
    import dataclasses

    prepared = parse_event(json.dumps(make_event()).encode(), SETTINGS)
    content = {"replaced": True}
    assert prepared.with_content(content) == dataclasses.replace(prepared, content=content)
    # Every field but the content is set from the event (a new field would need adding).
    names = {f.name for f in dataclasses.fields(prepared)}
    assert names == {"event_id", "content", "digest", "plain_json"}
