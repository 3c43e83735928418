"""RFC 8785 canonical bytes: known answers from the spec's rules, and I-JSON rejections."""

from __future__ import annotations

import decimal
import hashlib
import json
import struct
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from reference_impl.integrity import CanonicalizationError, canonical_digest, canonicalize


def _double(bits: str) -> float:
    """The IEEE 754 double with the given 16-hex-digit bit pattern."""
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


def test_rfc8785_section_3_2_2_example() -> None:
    # The input of RFC 8785 §3.2.2 as a parser produces it; the spec's output
    # follows from: members sorted, numbers in ECMAScript form, minimal escapes.
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],'
        '"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonicalize(json.loads(source)) == expected


def test_members_sorted_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: U+1F600 is the surrogate pair D83D DE00, so it sorts
    # before U+FB33 although its code point is larger.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonicalize(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert sorted(value) != keys, "code point order must differ for this test to mean anything"


def test_nested_members_are_sorted_and_whitespace_is_dropped() -> None:
    value = {"b": {"z": 1, "a": [True, None]}, "a": "x", "": 0}
    assert canonicalize(value) == b'{"":0,"a":"x","b":{"a":[true,null],"z":1}}'


def test_key_order_of_input_does_not_matter() -> None:
    forward = dict(zip("abcdef", range(6), strict=True))
    backward = dict(reversed(forward.items()))
    assert list(forward) != list(backward)
    assert canonicalize(forward) == canonicalize(backward)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.25e-7, "1.25e-7"),
        (123456789.125, "123456789.125"),
        (2.0**53, "9007199254740992"),
        (2**53 - 1, "9007199254740991"),
        (-(2**53 - 1), "-9007199254740991"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
    ],
)
def test_scalars(value: Any, expected: str) -> None:
    assert canonicalize(value) == expected.encode()


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        # RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS text.
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ],
)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert canonicalize(_double(bits)) == expected.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", '"plain"'),
        ('quote " and backslash \\', '"quote \\" and backslash \\\\"'),
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        # Solidus, DEL and the line/paragraph separators need no escape.
        ("/\x7f\u2028\u2029", '"/\x7f\u2028\u2029"'),
        ("\u00e9\u20ac\U0001f600", '"\u00e9\u20ac\U0001f600"'),
    ],
)
def test_string_escaping(text: str, expected: str) -> None:
    assert canonicalize(text) == expected.encode("utf-8")


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    assert canonicalize("\u00e9") == b'"\xc3\xa9"'


def test_tuples_are_arrays() -> None:
    assert canonicalize((1, "a", [])) == canonicalize([1, "a", []]) == b'[1,"a",[]]'


def test_enum_members_of_str_and_int_write_their_values() -> None:
    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    assert canonicalize({"c": Colour.RED, "l": Level.HIGH}) == b'{"c":"red","l":3}'


@pytest.mark.parametrize(
    "value",
    [
        2**53,
        -(2**53),
        10**30,
        {"nested": [0, 2**53]},
        float("nan"),
        float("inf"),
        float("-inf"),
        [1.0, float("nan")],
        {1: "integer key"},
        {None: "null key"},
        {True: "bool key"},
        {("a",): "tuple key"},
        {"ok": {2: "nested integer key"}},
        "\ud800",
        {"\udfff": 1},
        b"bytes",
        bytearray(b"x"),
        {1, 2},
        decimal.Decimal("1.5"),
        datetime(2024, 1, 1, tzinfo=UTC),
        object(),
    ],
    ids=repr,
)
def test_rejects_what_is_not_i_json(value: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


def test_rejects_self_containing_and_too_deep_values() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(CanonicalizationError):
        canonicalize(loop)
    deep: object = 0
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CanonicalizationError):
        canonicalize(deep)


def test_error_is_a_value_error_and_does_not_echo_the_value() -> None:
    secret = 123456789012345678901234567890
    with pytest.raises(ValueError, match="I-JSON") as caught:
        canonicalize({"mrn": secret})
    assert isinstance(caught.value, CanonicalizationError)
    assert str(secret) not in str(caught.value)


def test_canonical_digest_is_sha256_of_canonical_bytes() -> None:
    value = {"b": [1, 2.5], "a": "\u00e9"}
    expected = hashlib.sha256('{"a":"\u00e9","b":[1,2.5]}'.encode()).digest()
    assert canonical_digest(value) == expected
    assert canonical_digest({"a": "\u00e9", "b": [1, 2.5]}) == expected


def test_canonical_digest_rejects_what_canonicalize_rejects() -> None:
    with pytest.raises(CanonicalizationError):
        canonical_digest(float("nan"))
