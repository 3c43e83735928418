"""From request bytes to prepared events: parse strictly, sanitize, bound, canonicalize.

The pipeline runs in stages and collects every problem before it answers, so a client learns
about all bad fields at once (each named by an RFC 6901 JSON pointer):

1. size of the body (a 413 before any parsing);
2. strict schema parsing (`AuditEventIn`): types, enums, patterns, lengths, unknown fields;
3. sanitization of `details` with its depth and size bounds;
4. clock skew of `occurred_at` against the server clock;
5. the size of the event's canonical bytes.

Nothing is stored unless every event of the request passes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reference_impl.core.errors import (
    PayloadTooLargeError,
    ProblemField,
    SanitizationError,
    ValidationFailedError,
)
from reference_impl.core.settings import Settings
from reference_impl.events.plain_schema import PlainSchema
from reference_impl.events.sanitize import DetailsError, sanitize_details
from reference_impl.events.schemas import (
    ACTION_PATTERN,
    IDENT_PATTERN,
    RESOURCE_TYPE_PATTERN,
    AuditEventIn,
)
from reference_impl.integrity import CanonicalizationError, canonicalize
from reference_impl.integrity.signing import keyed_digest, keyed_sha256

__all__ = [
    "BatchIn",
    "PreparedEvent",
    "canonical_bytes",
    "canonical_form",
    "content_digest",
    "event_canonical_form",
    "format_timestamp",
    "parse_batch",
    "parse_event",
    "prepared_from_content",
    "sorted_json",
]


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A valid, sanitized event ready for the chain.

    Attributes:
        event_id: The client's idempotency key.
        content: The sanitized client content, JSON-ready (timestamps normalised to UTC);
            configured fields are replaced by ciphertext before the event is stored.
        digest: Idempotency digest of the plaintext content (see `content_digest`): equal
            digests mean "same content", whatever the ciphertext of encrypted fields.
        plain_json: The content was found to be JSON whose sorted orjson output is its
            RFC 8785 form (see `canonical_form`). Adding or replacing string members
            keeps it so, which lets the commit serialise the stored content without
            walking it again.
    """

    event_id: UUID
    content: dict[str, Any]
    digest: bytes
    plain_json: bool = False

    def with_content(self, content: dict[str, Any]) -> PreparedEvent:
        """The same event with ``content`` in place of its own (its fields encrypted).

        Written out rather than `dataclasses.replace`, which costs a microsecond per event
        to find the fields again. Adding a field to this class means adding it here.
        """
        return PreparedEvent(self.event_id, content, self.digest, self.plain_json)


# --8<-- [start:canonical-bytes]
_MAX_SAFE_INTEGER = 2**53 - 1


def _orjson_is_rfc8785(value: Any) -> bool:
    """Whether orjson's sorted output of ``value`` is its RFC 8785 form, byte for byte.

    It is for JSON made only of objects with ASCII member names, arrays, strings, integers
    within the I-JSON range, booleans and null: for those, sorting names by UTF-16 code
    units (RFC 8785 §3.2.3) is sorting them by bytes, as orjson does, and orjson escapes
    strings exactly as RFC 8785 §3.2.2.2 does (`\\b \\t \\n \\f \\r`, other controls as
    `\\u00xx`, everything else verbatim in UTF-8). Numbers with a fraction or an exponent
    are where the two differ (ECMAScript's number form), so any float takes the reference
    path, as does any other type.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            # Strings are most members of an event: decided here, without a call each.
            if type(item) is not str and not _orjson_is_rfc8785(item):
                return False
        return True
    if kind is list:
        return all(type(item) is str or _orjson_is_rfc8785(item) for item in value)
    if kind is int:
        return bool(-_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER)
    return False


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 canonical bytes of ``value``: the same bytes as `integrity.canonicalize`.

    The common shape of an audit event (strings, small integers, booleans, ASCII member
    names) is serialised by orjson in C; anything else goes to the reference implementation
    (`rfc8785`), which also raises `CanonicalizationError` for what has no canonical form.
    A property test checks the two agree on arbitrary JSON.
    """
    return canonical_form(value)[0]


def canonical_form(value: Any) -> tuple[bytes, bool]:
    """`canonical_bytes` of ``value``, and whether orjson's sorted output was that form."""
    return _canonical_form(value, value)


def event_canonical_form(content: dict[str, Any]) -> tuple[bytes, bool]:
    """`canonical_form` of an event's content as `AuditEventIn` dumps it.

    Only `details` can hold what orjson and RFC 8785 spell differently: by the schema,
    every other member is a string, or an object or array of strings, under an ASCII
    member name. A property test checks the answer against `canonical_form`.
    """
    return _canonical_form(content, content.get("details"))


def _canonical_form(value: Any, free_form: Any) -> tuple[bytes, bool]:
    # ``free_form``: the part of ``value`` that may not be plain JSON.
    try:
        if _orjson_is_rfc8785(free_form):
            return sorted_json(value), True
    except (orjson.JSONEncodeError, RecursionError):
        pass  # a lone surrogate or deep nesting: the reference path names the problem
    return canonicalize(value), False


def sorted_json(value: Any) -> bytes:
    """orjson's output with sorted member names: the RFC 8785 form of plain JSON only."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# --8<-- [end:canonical-bytes]


def content_digest(canonical: bytes, key: bytes | None) -> bytes:
    """The idempotency digest of an event's canonical plaintext bytes.

    Keyed (HMAC-SHA256 with the server pepper) when a key is given: the digest is stored,
    and an unkeyed hash of an event whose other fields are known would let anyone with the
    table test guesses of an encrypted low-entropy field, such as an IP address.
    """
    if key is None:
        return hashlib.sha256(canonical).digest()
    return keyed_digest(_keyed(key), canonical)


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    return keyed_sha256(key)


class BatchIn(BaseModel):
    """Body of `POST /v1/events:batch`."""

    model_config = ConfigDict(strict=True, extra="forbid")

    events: list[AuditEventIn] = Field(min_length=1)


# Requests are validated into the dictionaries the models would dump to (see `PlainSchema`):
# the models stay the documented contract, and the source of every rule.
_EVENT = PlainSchema(AuditEventIn)
_BATCH = PlainSchema(BatchIn)


def prepared_from_content(payload: bytes, digest: bytes | None = None) -> PreparedEvent:
    """Rebuild a prepared event from content this service validated earlier (a queue entry).

    ``digest`` is the idempotency digest recorded with it; without one, it is computed
    from the content as it is (unkeyed).

    Raises:
        ValueError: the payload is not such content.
    """
    try:
        content = orjson.loads(payload)
        if not isinstance(content, dict):
            raise ValueError("the event is not a JSON object")
        canonical, plain = canonical_form(content)
        if digest is None:
            digest = content_digest(canonical, None)
        return PreparedEvent(
            event_id=UUID(content["event_id"]), content=content, digest=digest, plain_json=plain
        )
    except (KeyError, TypeError, CanonicalizationError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a prepared event: {type(exc).__name__}") from None


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`: one spelling per instant, so hashes agree."""
    utc = value.astimezone(UTC)
    if utc.year >= 1000:
        # isoformat is the same text as the strftime below for four-digit years, without
        # strftime's format parsing on every event.
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --8<-- [start:parse-event]
def parse_event(raw: bytes, settings: Settings, now: datetime | None = None) -> PreparedEvent:
    """Parse one event from a request body.

    Raises:
        PayloadTooLargeError: the body exceeds `max_event_bytes`.
        ValidationFailedError: any field is invalid; `errors` lists each by JSON pointer.
    """
    if len(raw) > settings.max_event_bytes:
        raise PayloadTooLargeError(f"an event is limited to {settings.max_event_bytes} bytes")
    try:
        event = _EVENT.validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailedError(_pydantic_fields(exc, prefix="")) from None
    errors = _Errors()
    prepared = _prepare(event, "", settings, _Window.around(now, settings), errors)
    errors.raise_if_any()
    assert prepared is not None
    return prepared


# --8<-- [end:parse-event]


def parse_batch(raw: bytes, settings: Settings, now: datetime | None = None) -> list[PreparedEvent]:
    """Parse a batch body `{"events": [...]}`; all events pass or none is accepted.

    Raises:
        PayloadTooLargeError: the body exceeds `max_batch_bytes`.
        ValidationFailedError: any event is invalid, or the batch is too long.
    """
    if len(raw) > settings.max_batch_bytes:
        raise PayloadTooLargeError(f"a batch is limited to {settings.max_batch_bytes} bytes")
    try:
        events = _BATCH.validate_json(raw)["events"]
    except ValidationError as exc:
        raise ValidationFailedError(_pydantic_fields(exc, prefix="")) from None
    if len(events) > settings.max_batch_events:
        raise ValidationFailedError(
            [ProblemField(f"at most {settings.max_batch_events} events", pointer="/events")]
        )
    errors = _Errors()
    window = _Window.around(now, settings)
    prepared = [
        _prepare(event, f"/events/{i}", settings, window, errors) for i, event in enumerate(events)
    ]
    errors.raise_if_any()
    return [p for p in prepared if p is not None]


@dataclass(frozen=True, slots=True)
class _Window:
    """The `occurred_at` a request accepts (computed once per request, not per event)."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime | None, settings: Settings) -> _Window:
        now = now or datetime.now(UTC)
        return cls(
            earliest=now - timedelta(days=settings.max_event_age_days),
            latest=now + timedelta(seconds=settings.max_future_skew_s),
        )


class _Errors:
    """Problems found so far; only sanitizer bounds broken → a `sanitization-error`."""

    def __init__(self) -> None:
        self.fields: list[ProblemField] = []
        self.sanitization: list[ProblemField] = []

    def __len__(self) -> int:
        return len(self.fields) + len(self.sanitization)

    def raise_if_any(self) -> None:
        if self.fields:
            raise ValidationFailedError(self.fields + self.sanitization)
        if self.sanitization:
            raise SanitizationError(self.sanitization)


def _prepare(
    content: dict[str, Any], pointer: str, settings: Settings, window: _Window, errors: _Errors
) -> PreparedEvent | None:
    """The prepared event of validated ``content`` (made JSON-ready in place)."""
    start = len(errors)
    event_id: UUID = content["event_id"]
    occurred_at: datetime = content["occurred_at"]
    content["event_id"] = str(event_id)
    content["occurred_at"] = format_timestamp(occurred_at)
    try:
        content["details"] = sanitize_details(content["details"])
    except DetailsError as exc:
        errors.sanitization.append(
            ProblemField(exc.message, pointer=f"{pointer}/details{exc.pointer}")
        )
    if occurred_at > window.latest:
        errors.fields.append(
            ProblemField(
                f"more than {settings.max_future_skew_s} s ahead of the server clock",
                pointer=f"{pointer}/occurred_at",
            )
        )
    if occurred_at < window.earliest:
        errors.fields.append(
            ProblemField(
                f"older than {settings.max_event_age_days} days", pointer=f"{pointer}/occurred_at"
            )
        )
    if len(errors) > start:
        return None
    canonical, plain = event_canonical_form(content)
    if len(canonical) > settings.max_event_bytes:
        errors.fields.append(
            ProblemField(
                f"the event is larger than {settings.max_event_bytes} bytes once canonical",
                pointer=pointer or "",
            )
        )
        return None
    return PreparedEvent(
        event_id=event_id,
        content=content,
        digest=content_digest(canonical, _pepper(settings)),
        plain_json=plain,
    )


def _pepper(settings: Settings) -> bytes | None:
    if settings.api_key_pepper is None:
        return None
    return _decoded(settings.api_key_pepper.get_secret_value())


@functools.lru_cache(maxsize=8)
def _decoded(secret: str) -> bytes:
    # Decoded once per secret rather than once per event.
    return base64.b64decode(secret)


# Messages of these error types quote the input; say what is expected instead.
_QUOTING_TYPES = {
    "uuid_parsing": "must be a UUID",
    "datetime_parsing": "must be an RFC 3339 timestamp with a time zone",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp with a time zone",
    "json_invalid": "the body is not valid JSON",
    "value_error": None,
}


_PATTERN_MESSAGES = {
    IDENT_PATTERN: "must not contain spaces, control characters, quotes or <>",
    ACTION_PATTERN: "must be a dotted lower-case name like fhir.patient.read",
    RESOURCE_TYPE_PATTERN: "must be a resource type name like Patient",
}


def _pydantic_fields(exc: ValidationError, prefix: str) -> list[ProblemField]:
    fields = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = "".join(f"/{_escape(part)}" for part in err["loc"])
        message = _QUOTING_TYPES.get(err["type"]) or err["msg"]
        if err["type"] == "string_pattern_mismatch":
            pattern = str((err.get("ctx") or {}).get("pattern", ""))
            message = _PATTERN_MESSAGES.get(pattern, "has characters that are not allowed")
        if err["type"] == "value_error":
            message = err["msg"].removeprefix("Value error, ")
        fields.append(ProblemField(message, pointer=prefix + loc))
    return fields


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")
