"""Checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note`s, signed with Ed25519.

A checkpoint commits a log to its tree head. The body is three lines or more:

```text
auditkit.local/log/clinic-7      <- origin: which log (one per tenant)
1042                              <- tree size, decimal, no leading zeros
Qk3r...Fg=                        <- root hash, standard base64
```

optionally followed by extension lines. The note adds a blank line and signature lines of
the form ``— <key name> <base64(key id ‖ signature)>``, where the key id is the first four
bytes of ``SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`` and the signature is Ed25519
over the body (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A verifier is configured with *verifier keys* in the text form
``<name>+<hex key id>+<base64(0x01 ‖ public key)>``, the same form Go's
``golang.org/x/mod/sumdb/note`` reads, so the checkpoints verify with the tools of the
transparency-log ecosystem.

Notes are refused, never repaired: a signature from a known key that fails, control
characters, a missing final newline or a malformed line all raise
[`NoteError`][reference_impl.integrity.checkpoint.NoteError], whose message says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from reference_impl.integrity.merkle import HASH_SIZE

__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "key_id_of",
    "open_checkpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
]

ED25519_TYPE: Final = 0x01
"""The signed-note signature type byte of Ed25519."""

MAX_SIGNATURES: Final = 100
"""Most signature lines a note may carry (the spec asks verifiers to accept at least 16)."""

_DASH: Final = "\u2014 "
_B64: Final = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_DECIMAL: Final = re.compile(r"^(0|[1-9][0-9]*)$")
_MAX_TREE_SIZE: Final = 2**63 - 1


class NoteError(ValueError):
    """A note or checkpoint that is malformed or whose signatures do not verify."""


def _b64decode(text: str, what: str) -> bytes:
    # Standard base64 with padding, nothing else: two encodings of one value would let
    # two different notes carry the same signature.
    if not _B64.match(text) or len(text) % 4:
        raise NoteError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not standard base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} is empty or contains a space or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise NoteError("key names must not contain control characters")


def key_id_of(name: str, sig_type: int, public_key: bytes) -> bytes:
    """The 4-byte signed-note key id of a key.

    Args:
        name: The key name.
        sig_type: The signature type byte (``ED25519_TYPE``).
        public_key: The encoded public key (32 bytes for Ed25519).

    Returns:
        The first four bytes of ``SHA-256(name ‖ 0x0A ‖ sig_type ‖ public_key)``.
    """
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


# --8<-- [start:verifier]
@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """The public half of a note key: verifies signatures under one name.

    Attributes:
        name: The key name, as it appears on signature lines.
        public_key: The 32-byte Ed25519 public key.
    """

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        """Validate the name and the key length.

        Raises:
            NoteError: If the name is not a valid key name or the key is not 32 bytes.
        """
        _check_key_name(self.name)
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id carried in front of each signature."""
        return key_id_of(self.name, ED25519_TYPE, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key text: ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``."""
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key text.

        Args:
            vkey: ``<name>+<8 hex digits>+<base64(0x01 ‖ 32-byte key)>``.

        Returns:
            The verifier.

        Raises:
            NoteError: If the text is malformed, the key is not Ed25519, or the key id does
                not match the name and key.
        """
        parts = vkey.strip().split("+")
        # A base64 key may itself contain '+': the name and the id never do.
        if len(parts) < 3:
            raise NoteError("a verifier key is <name>+<key id>+<key>")
        name, hex_id, encoded = parts[0], parts[1], "+".join(parts[2:])
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise NoteError("the key id of a verifier key is 8 lower-case hex digits")
        raw = _b64decode(encoded, "the verifier key")
        if len(raw) != 33 or raw[0] != ED25519_TYPE:
            raise NoteError("the verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError("the key id of the verifier key does not match its name and key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


# --8<-- [end:verifier]


class NoteSigner:
    """The private half of a note key. Its seed never appears in ``repr``.

    Args:
        name: The key name written on signature lines.
        seed: The 32-byte Ed25519 private key seed.

    Raises:
        NoteError: If the name is invalid or the seed is not 32 bytes.
    """

    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        _check_key_name(name)
        if len(seed) != 32:
            raise NoteError("an Ed25519 seed is 32 bytes")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier(name, public)

    def __repr__(self) -> str:
        """Describe the key by its public verifier key."""
        return f"NoteSigner({self.verifier.vkey!r})"

    def sign(self, text: str) -> NoteSignature:
        """Sign a note text.

        Args:
            text: The note text, ending in a newline.

        Returns:
            The signature, with this key's name and id.
        """
        return NoteSignature(self.name, self.verifier.key_id, self._key.sign(text.encode()))


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: ``— <name> <base64(key_id ‖ signature)>``."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, with its final newline."""
        encoded = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH}{self.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A parsed note: its text and every signature line, verified or not."""

    text: str
    signatures: tuple[NoteSignature, ...]
    verified_by: tuple[NoteVerifier, ...] = field(default=())

    def serialize(self) -> str:
        """The note as text: body, blank line, signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign a note text with one or more keys.

    Args:
        text: The text; it must end in a newline and hold no control characters but
            newlines.
        signers: The keys to sign with.

    Returns:
        The signed note as text.

    Raises:
        NoteError: If the text is not a valid note text or there is no signer.
    """
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signature")
    return SignedNote(text, tuple(s.sign(text) for s in signers)).serialize()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("the note text does not end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("the note contains a control character")


def _parse(note: str) -> SignedNote:
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.split("\n")[:-1]
    if not lines:
        raise NoteError("the note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("a signature line does not start with an em dash and a space")
        name, sep, encoded = line[len(_DASH) :].partition(" ")
        if not sep or " " in encoded:
            raise NoteError("a signature line is not '— <name> <signature>'")
        _check_key_name(name)
        raw = _b64decode(encoded, f"the signature of key {name}")
        if len(raw) < 5:
            raise NoteError(f"the signature of key {name} is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return SignedNote(text, tuple(signatures))


# --8<-- [start:open-note]
def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> SignedNote:
    """Parse a signed note and verify it with the known keys.

    Signatures from unknown keys (another name or another key id) are ignored, as the
    spec requires; a signature from a known key that fails rejects the whole note, and so
    does a note no known key signed.

    Args:
        note: The signed note text.
        verifiers: The trusted keys.

    Returns:
        The note, with the keys that verified it.

    Raises:
        NoteError: If the note is malformed, a known key's signature fails, or no known
            key signed it.
    """
    parsed = _parse(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = parsed.text.encode()
    verified: list[NoteVerifier] = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise NoteError(f"the signature of key {sig.name} ({sig.key_id.hex()}) is invalid")
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        raise NoteError("no signature from a trusted key")
    return SignedNote(parsed.text, parsed.signatures, tuple(verified))


# --8<-- [end:open-note]


# --8<-- [start:checkpoint]
@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size and root hash (c2sp.org/tlog-checkpoint).

    Attributes:
        origin: The log's identity, e.g. ``auditkit.local/log/clinic-7``.
        size: The number of leaves.
        root_hash: The 32-byte RFC 9162 root hash at ``size``.
        extensions: Optional extension lines (not used by this service).
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate the fields so that only well-formed bodies are ever produced.

        Raises:
            NoteError: If a field cannot appear in a checkpoint body.
        """
        if not self.origin or "\n" in self.origin or any(ord(c) < 0x20 for c in self.origin):
            raise NoteError("the origin is empty or contains a control character")
        if isinstance(self.size, bool) or not 0 <= self.size <= _MAX_TREE_SIZE:
            raise NoteError("the tree size is out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"the root hash is not {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or any(ord(c) < 0x20 for c in line):
                raise NoteError("an extension line is empty or contains a control character")

    def body(self) -> str:
        """The note text: origin, size, base64 root and extensions, one per line."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (a note text, signatures already removed).

        Raises:
            NoteError: If the text is not a checkpoint body.
        """
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a tree size and a root hash")
        origin, size, root_b64, *extensions = lines
        if not _DECIMAL.match(size):
            raise NoteError("the tree size is not a decimal number without leading zeros")
        root_hash = _b64decode(root_b64, "the root hash")
        return cls(origin, int(size), root_hash, tuple(extensions))


# --8<-- [end:checkpoint]


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note.

    Args:
        checkpoint: The tree head.
        signer: The log's checkpoint key.

    Returns:
        The signed note text.
    """
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(
    note: str, verifiers: Iterable[NoteVerifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse its body.

    Args:
        note: The signed note.
        verifiers: The trusted checkpoint keys.
        origin: When given, the origin the checkpoint must name.

    Returns:
        The checkpoint.

    Raises:
        NoteError: If the note does not verify, is not a checkpoint, or names another
            origin.
    """
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is for origin {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
