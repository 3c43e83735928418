"""API key format and stored hash."""

from __future__ import annotations

from reference_impl.security import apikeys


def test_key_round_trip() -> None:
    prefix, secret = apikeys.new_key()
    key = apikeys.format_key(prefix, secret)
    assert key.startswith("ak_")
    assert apikeys.parse_key(key) == (prefix, secret)


def test_malformed_keys_are_rejected() -> None:
    for bad in (
        "",
        "ak_",
        "ak_short_secret",
        "xx_000000000000_" + "s" * 43,
        "ak_000000000000_tiny",
    ):
        assert apikeys.parse_key(bad) is None


def test_only_a_keyed_hash_is_stored() -> None:
    _, secret = apikeys.new_key()
    stored = apikeys.hash_secret(b"p" * 32, secret)
    assert secret.encode() not in stored
    assert apikeys.secrets_match(b"p" * 32, secret, stored)
    assert not apikeys.secrets_match(b"q" * 32, secret, stored)
    assert not apikeys.secrets_match(b"p" * 32, secret + "x", stored)
