"""Validating into plain dictionaries decides and dumps exactly as the documented model.

Ingest validates with TypedDicts derived from `AuditEventIn` (`PlainSchema`); the model is
the contract. Whatever a client sends, both must accept the same events, produce the same
content (what `model_dump(mode="json", exclude_none=True)` gives, hashed into the chain)
and name the same fields with the same messages when they refuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, field_validator

from reference_impl.events.plain_schema import PlainSchema
from reference_impl.events.schemas import AuditEventIn
from reference_impl.events.validation import BatchIn, _pydantic_fields, format_timestamp
from tests.support.events import make_event

pytestmark = pytest.mark.property

EVENT = PlainSchema(AuditEventIn)
BATCH = PlainSchema(BatchIn)

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
# Valid and invalid spellings of what the schema constrains.
texts = st.sampled_from(
    ["a", "jose\u0301", "A b", "<x>", "", "x" * 300, "ünï", "\u00e9", "r-1", "a\x00b"]
)
ip_addresses = st.sampled_from(
    ["10.0.0.7", "010.0.0.7", "::1", "2001:DB8::1", "999.1.1.1", "fe80::1%eth0", "", "1.2.3"]
)
principals = st.fixed_dictionaries(
    {"id": texts | junk, "type": st.sampled_from(["user", "service", "robot"]) | junk},
    optional={
        "roles": st.lists(texts, max_size=3) | st.lists(texts, min_size=33, max_size=33) | junk,
        "on_behalf_of": texts | st.none() | junk,
        "extra": junk,
    },
)
targets = st.fixed_dictionaries(
    {"resource_type": st.sampled_from(["Patient", "patient", "Obs1"]), "resource_id": texts},
    optional={"subject_id": texts | st.none()},
)
sessions = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "session_id": texts | st.none(),
        "ip_address": ip_addresses | st.none() | junk,
        "user_agent": st.sampled_from(["EHR/1", "a\u202eb", "u" * 600]) | st.none(),
    },
)
overrides = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.sampled_from(
            ["2F1D3C4E-5A6B-4C7D-8E9F-0A1B2C3D4E5F", "2f1d3c4e5a6b4c7d8e9f0a1b2c3d4e5f", "x"]
        )
        | junk,
        "occurred_at": st.sampled_from(
            ["2026-11-23T10:00:00+01:00", "2026-11-23T09:00:00Z", "2026-11-23T09:00:00", "0"]
        )
        | junk,
        "category": st.sampled_from(["data_access", "gossip"]) | junk,
        "fhir_action": st.sampled_from(["C", "R", "X"]),
        "outcome": st.sampled_from(["success", "failure"]) | junk,
        "outcome_description": st.sampled_from(["ok", "a\x07b", "d" * 1100]) | st.none(),
        "principal": principals | junk,
        "target": targets,
        "session": sessions,
        "correlation_id": texts | st.none(),
        "details": st.dictionaries(st.text(max_size=3), junk, max_size=3) | junk,
        "unexpected": junk,
    },
)
drops = st.sets(st.sampled_from(["outcome_description", "session", "details", "correlation_id"]))


def _event(changes: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    event = make_event()
    event.update(changes)
    for name in dropped:
        event.pop(name, None)
    return event


def _plain_types_only(value: Any) -> bool:
    # Enumerations must arrive as `str` itself, as a JSON dump gives them.
    if isinstance(value, dict):
        return all(_plain_types_only(v) for v in value.values())
    if isinstance(value, list):
        return all(_plain_types_only(v) for v in value)
    return type(value) in (str, int, float, bool)


def _via_model(raw: bytes) -> dict[str, Any] | list[dict[str, str]]:
    try:
        model = AuditEventIn.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        return [f.as_dict() for f in _pydantic_fields(exc, prefix="")]
    content = model.model_dump(mode="json", exclude_none=True)
    content["occurred_at"] = format_timestamp(model.occurred_at)
    return content


def _via_plain(raw: bytes) -> dict[str, Any] | list[dict[str, str]]:
    try:
        content = EVENT.validate_json(raw)
    except ValidationError as exc:
        return [f.as_dict() for f in _pydantic_fields(exc, prefix="")]
    content["event_id"] = str(content["event_id"])
    content["occurred_at"] = format_timestamp(content["occurred_at"])
    details = content.pop("details")
    assert _plain_types_only(content)
    content["details"] = details
    return content


@settings(max_examples=800, deadline=None)
@given(overrides, drops)
@example({"session": {}}, set())
@example({"principal": {"id": "a", "type": "user"}}, {"details"})
@example({"correlation_id": None, "outcome_description": None, "session": None}, set())
def test_same_decision_same_content_same_problems(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    raw = json.dumps(_event(changes, dropped)).encode()
    assert _via_plain(raw) == _via_model(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(overrides, drops), max_size=3), st.sampled_from([{}, {"x": 1}]))
def test_batches_decide_as_the_batch_model(events: list[Any], extra: dict[str, Any]) -> None:
    raw = json.dumps({"events": [_event(c, d) for c, d in events], **extra}).encode()
    assert _batch_via(lambda: BATCH.validate_json(raw)["events"]) == _batch_via(
        lambda: [
            e.model_dump(exclude_none=True)
            for e in BatchIn.model_validate_json(raw, strict=True).events
        ]
    )


def _batch_via(parse: Callable[[], list[dict[str, Any]]]) -> Any:
    """The events a way of parsing gives, or the problems it names."""
    try:
        return parse()
    except ValidationError as exc:
        return _pydantic_fields(exc, "")


class _Inner(BaseModel):
    a: int = 1


class _Grid(BaseModel):
    grid: list[list[_Inner]]


class _Aliased(BaseModel):
    a: int = Field(alias="A")


class _Checked(BaseModel):
    a: int

    @field_validator("a")
    @classmethod
    def _positive(cls, value: int) -> int:
        return value


@pytest.mark.parametrize(
    ("model", "named"), [(_Grid, "grid"), (_Aliased, "aliases"), (_Checked, "validators")]
)
def test_what_it_cannot_carry_over_is_refused(model: type[BaseModel], named: str) -> None:
    with pytest.raises(TypeError, match=named):
        PlainSchema(model)
