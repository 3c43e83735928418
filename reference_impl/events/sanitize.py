"""Sanitization of the strings inside an audit event.

Identifiers are validated, never rewritten: an id with a control character is rejected.
Free text (outcome descriptions, user agents, `details` values) is rewritten so that it is
safe to show in a terminal, a log line or a web page, whatever tool reads the log later:

1. Unicode NFC, so that equal text has equal bytes (and equal hashes);
2. control characters removed, except tab and newline (CRLF and CR become LF);
3. bidirectional overrides removed (they can make text read differently than it is stored);
4. markup neutralised: `<` and `>` become `&lt;` and `&gt;`, so no tag can form when the
   text is inserted into HTML. `&` is left alone, which keeps sanitizing idempotent.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

__all__ = ["DetailsError", "nfc", "rewrite_text", "sanitize_details", "sanitize_text"]

# C0 and C1 controls and DEL, except TAB (\x09) and LF (\x0a).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidi embeddings/overrides/isolates and their terminators.
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_MAX_SAFE_INT = 2**53 - 1
# What the rules above change in ASCII text: controls other than TAB and LF (CR among them)
# and angle brackets. Most audit text is ASCII without any of them, and is kept as it is
# without the rewrite's six passes over it.
_ASCII_TO_REWRITE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f<>]")


class DetailsError(ValueError):
    """A `details` value breaks a bound; `pointer` is relative to `details`."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


def nfc(value: str) -> str:
    """Unicode NFC normal form."""
    if value.isascii():  # ASCII text is always in NFC
        return value
    return unicodedata.normalize("NFC", value)


def sanitize_text(value: str) -> str:
    """Free text made safe to store and display; see the module docstring."""
    if value.isascii() and _ASCII_TO_REWRITE.search(value) is None:
        return value
    return rewrite_text(value)


def rewrite_text(value: str) -> str:
    """`sanitize_text` without its shortcut for text that needs no change (tests compare)."""
    value = nfc(value).replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROLS.sub("", value)
    value = _BIDI.sub("", value)
    return value.replace("<", "&lt;").replace(">", "&gt;")


def sanitize_details(
    value: dict[str, Any],
    *,
    max_depth: int = 8,
    max_keys: int = 256,
    max_items: int = 1000,
    max_key_length: int = 128,
    max_string_length: int = 8192,
) -> dict[str, Any]:
    """A sanitized copy of an event's `details` object, or `DetailsError` on a bound.

    Depth counts nested containers: `{"a": 1}` has depth 1, `{"a": {"b": 1}}` depth 2.
    Numbers must be I-JSON: integers within +/-(2**53 - 1) and finite floats, so that every
    verifier reproduces the same canonical bytes.
    """
    limits = (max_depth, max_keys, max_items, max_key_length, max_string_length)
    result = _walk(value, (), 1, limits)
    assert isinstance(result, dict)
    return result


def _error(path: tuple[str | int, ...], message: str) -> DetailsError:
    # The pointer is spelled only when something is wrong, not for every member.
    return DetailsError("".join(f"/{_escape_pointer(str(token))}" for token in path), message)


def _walk(
    value: Any, path: tuple[str | int, ...], depth: int, limits: tuple[int, int, int, int, int]
) -> Any:
    max_depth, max_keys, max_items, max_key_length, max_string_length = limits
    if isinstance(value, dict):
        if depth > max_depth:
            raise _error(path, f"nested deeper than {max_depth} levels")
        if len(value) > max_keys:
            raise _error(path, f"more than {max_keys} keys in one object")
        out: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = sanitize_text(key)
            if not clean_key or len(clean_key) > max_key_length:
                raise _error((*path, clean_key), f"keys must have 1 to {max_key_length} characters")
            if clean_key in out:
                raise _error((*path, clean_key), "two keys are equal after sanitization")
            out[clean_key] = _walk(item, (*path, clean_key), depth + 1, limits)
        return out
    if isinstance(value, list):
        if depth > max_depth:
            raise _error(path, f"nested deeper than {max_depth} levels")
        if len(value) > max_items:
            raise _error(path, f"more than {max_items} items in one array")
        return [_walk(item, (*path, i), depth + 1, limits) for i, item in enumerate(value)]
    if isinstance(value, str):
        if len(value) > max_string_length:
            raise _error(path, f"strings are limited to {max_string_length} characters")
        return sanitize_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise _error(path, "integers must be within +/-(2**53 - 1)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(path, "numbers must be finite")
        return value
    raise _error(path, "unsupported value type")


def _escape_pointer(token: str) -> str:
    """RFC 6901 escaping of one reference token."""
    return token.replace("~", "~0").replace("/", "~1")
