"""`session.ip_address` is kept exactly as `ipaddress` would spell it, or refused.

Dotted quads already in that form skip the module's parsing; the shortcut must accept
exactly the strings the module would return unchanged, and nothing it would refuse.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_impl.events.schemas import _ip

pytestmark = pytest.mark.property

octet = (
    st.integers(0, 300).map(str)
    | st.from_regex(r"\A0[0-9]{1,2}\Z")
    | st.sampled_from(["", "-1", "+1", "1 ", "٣", "0x1", "00"])
)
quads = st.lists(octet, min_size=3, max_size=5).map(".".join)


def _module(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _ours(value: str) -> str | None:
    try:
        return _ip(value)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(quads | st.ip_addresses().map(str) | st.text(max_size=20))
@example("1.2.3.04")
@example("255.255.255.255")
@example("1.2.3.4\n")
@example("::ffff:1.2.3.4")
def test_the_shortcut_agrees_with_ipaddress(value: str) -> None:
    assert _ours(value) == _module(value)
