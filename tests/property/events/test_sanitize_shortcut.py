"""Text that needs no change is returned as it is: the shortcut agrees with the full rewrite."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from reference_impl.events.sanitize import nfc, rewrite_text, sanitize_text

# ASCII with every control, CR, angle brackets and ampersands well represented, and any text.
_ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=60)
_ANY = st.text(max_size=60)


@given(st.one_of(_ASCII, _ANY))
def test_sanitize_text_is_the_rewrite(value: str) -> None:
    assert sanitize_text(value) == rewrite_text(value)


@given(st.one_of(_ASCII, _ANY))
def test_nfc_is_unicode_nfc(value: str) -> None:
    assert nfc(value) == unicodedata.normalize("NFC", value)


def test_plain_ascii_is_returned_unchanged_and_markup_is_not() -> None:
    plain = "scheduled visit, ward 6 & clinic"
    assert sanitize_text(plain) is plain
    assert sanitize_text("a<b>\r\nc\x07") == "a&lt;b&gt;\nc"
