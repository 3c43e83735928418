"""Properties of RFC 8785 canonical bytes over generated JSON values."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impl.integrity import canonicalize

pytestmark = pytest.mark.property

SAFE_INT = 2**53 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE_INT, max_value=SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)
layouts = st.fixed_dictionaries(
    {
        "sort_keys": st.booleans(),
        "indent": st.sampled_from([None, 0, 1, 4, "\t"]),
        "separators": st.sampled_from([None, (",", ":"), (", ", ": "), (" ,", " : ")]),
        "ensure_ascii": st.booleans(),
    }
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's members in another insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


def _parse_ijson_number(text: str) -> int | float:
    # I-JSON numbers are doubles: a canonical integral double such as 1e20 prints
    # as "100000000000000000000", which a parser must read back as a double.
    number = int(text)
    return number if abs(number) <= SAFE_INT else float(text)


def _es_number(value: float) -> str:
    """ECMA-262 Number::toString, built from Python's shortest round-trip digits."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _es_number(-value)
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    power = (int(exponent) if exponent else 0) - len(fraction)
    stripped = digits.rstrip("0")
    power += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = power + k  # value == 0.digits * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(e)}"


@settings(max_examples=300, deadline=None)
@given(json_values, layouts, st.randoms(use_true_random=False))
def test_invariant_under_layout_and_member_order(
    value: Any, layout: dict[str, Any], rng: random.Random
) -> None:
    text = json.dumps(_shuffled(value, rng), **layout)
    assert canonicalize(json.loads(text)) == canonicalize(value)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_bytes_are_a_fixed_point(value: Any) -> None:
    canonical = canonicalize(value)
    reparsed = json.loads(canonical, parse_int=_parse_ijson_number)
    assert canonicalize(reparsed) == canonical


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_bytes_are_utf8_json_of_an_equal_value(value: Any) -> None:
    text = canonicalize(value).decode("utf-8")
    # Python compares 1 == 1.0 and -0.0 == 0, which is JSON's number equality.
    assert json.loads(text, parse_int=_parse_ijson_number) == value
    # Newlines inside strings are escaped and no whitespace is added between tokens.
    assert "\n" not in text


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), st.integers(0, 9), max_size=12))
def test_members_are_ordered_by_utf16_code_units(value: dict[str, int]) -> None:
    pairs = json.loads(canonicalize(value), object_pairs_hook=list)
    keys = [key for key, _ in pairs]
    assert keys == sorted(value, key=lambda key: key.encode("utf-16-be"))


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_follow_ecmascript_number_to_string(value: float) -> None:
    text = canonicalize(value).decode()
    assert text == _es_number(value)
    assert float(text) == value
