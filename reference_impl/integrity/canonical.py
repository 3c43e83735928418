"""RFC 8785 (JSON Canonicalization Scheme) bytes for audit events.

Everything the service hashes or signs is hashed over these bytes, and the bytes
themselves are stored next to the event. Verification therefore never
serialises the event again, so neither a database driver's timestamp format nor
a float printed another way can break a chain.

The input must be I-JSON (RFC 7493): the only accepted values are ``None``,
``bool``, ``int`` within ±(2**53 - 1), finite ``float``, ``str`` without lone
surrogates, ``list``/``tuple`` and ``dict`` with ``str`` keys. Anything else is
refused with [`CanonicalizationError`][reference_impl.integrity.canonical.CanonicalizationError]
rather than coerced, because a silent coercion would let two different events
share one hash.

Example:
    ```python
    from reference_impl.integrity import canonicalize

    assert canonicalize({"b": 1, "a": [1e21, -0.0]}) == b'{"a":[1e+21,0],"b":1}'
    ```
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import rfc8785

__all__ = ["CanonicalizationError", "canonical_digest", "canonicalize"]


class CanonicalizationError(ValueError):
    """The value is not I-JSON, so it has no RFC 8785 canonical form.

    The message names the rule that was broken, never the offending value: event
    content may carry protected health information and errors end up in logs.
    """


def canonicalize(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-like value.

    Object members are ordered by the UTF-16 code units of their names, numbers
    use the ECMAScript shortest round-trip form (``1e+21``, ``1e-7``, ``-0``
    written as ``0``), and strings escape only what JSON requires.

    Args:
        value: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``,
            ``tuple`` or ``dict`` with ``str`` keys, nested arbitrarily.

    Returns:
        The canonical bytes; equal values always give equal bytes.

    Raises:
        CanonicalizationError: If the value is not I-JSON: an integer outside
            ±(2**53 - 1), NaN or an infinity, a non-``str`` object key, a string
            that is not valid Unicode, an unsupported type, or nesting too deep
            (including a container that contains itself).
    """
    try:
        # The library is typed for its own JSON alias; an arbitrary object is
        # exactly what it validates, so the cast only silences the annotation.
        return rfc8785.dumps(cast(Any, value))
    except rfc8785.IntegerDomainError:
        raise CanonicalizationError("integer outside the I-JSON range of ±(2**53 - 1)") from None
    except rfc8785.FloatDomainError:
        raise CanonicalizationError("NaN and infinities are not JSON numbers") from None
    except rfc8785.CanonicalizationError as exc:
        # These messages name a type or a rule, never a value.
        raise CanonicalizationError(str(exc)) from None
    except UnicodeError:
        # The library checks string values itself but sorts member names by
        # their UTF-16 form first, where a lone surrogate fails before any check.
        raise CanonicalizationError("strings must not contain lone surrogates") from None
    except RecursionError:
        raise CanonicalizationError("value is nested too deeply or contains itself") from None


def canonical_digest(value: object) -> bytes:
    """Return the SHA-256 digest of the canonical bytes of a value.

    Args:
        value: Any value accepted by
            [`canonicalize`][reference_impl.integrity.canonical.canonicalize].

    Returns:
        The 32-byte digest.

    Raises:
        CanonicalizationError: If the value is not I-JSON.
    """
    return hashlib.sha256(canonicalize(value)).digest()
