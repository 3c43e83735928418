"""API key format and hashing.

A key reads `ak_<prefix>_<secret>`: the 12-character prefix is public (it finds the row and
names the key in logs), the secret is 256 random bits. Only HMAC-SHA256(pepper, secret) is
stored. A slow password hash would add nothing here: the secret is random, not chosen by a
person, so it cannot be guessed from a dictionary; the server-side pepper means a stolen
table alone cannot even be checked against a guess.
"""

from __future__ import annotations

import hmac
import secrets

__all__ = ["format_key", "hash_secret", "new_key", "parse_key", "secrets_match"]

_SCHEME = "ak"


def new_key() -> tuple[str, str]:
    """A fresh `(prefix, secret)` pair."""
    return secrets.token_hex(6), secrets.token_urlsafe(32)


def format_key(prefix: str, secret: str) -> str:
    """The key as given to its owner, once."""
    return f"{_SCHEME}_{prefix}_{secret}"


def parse_key(presented: str) -> tuple[str, str] | None:
    """Split a presented key into `(prefix, secret)`, or None if it is not one of ours."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != _SCHEME or len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


def hash_secret(pepper: bytes, secret: str) -> bytes:
    """The stored form of a secret."""
    return hmac.digest(pepper, secret.encode(), "sha256")


def secrets_match(pepper: bytes, secret: str, stored: bytes) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(pepper, secret), stored)
