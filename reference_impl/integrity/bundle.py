"""Export bundles: a tenant's events with the proofs that they are in its signed log.

A bundle is a directory that anyone can verify offline with nothing but this package and
the log's public checkpoint key:

- `manifest.json`: RFC 8785 JSON with the format, origin, tenant, tree size, event count,
  first and last seq, and the SHA-256 of each other file;
- `checkpoint.txt`: the signed checkpoint (a C2SP signed note) every proof leads to;
- `keys.txt`: the log's checkpoint verifier keys, one per line (every key it ever used);
- `events.ndjson`: one RFC 8785 JSON object per event, in seq order, with `seq`,
  `event_id`, `recorded_at`, `canonical` (base64 of the stored canonical bytes),
  `prev_hash` and `hash` (hex);
- `proofs.ndjson`: one RFC 8785 JSON object per event, in the same order, with
  `leaf_index`, `tree_size` and `proof` (the RFC 9162 inclusion proof, base64 hashes).

The events of a bundle are a contiguous run of seqs, so the verifier also checks that each
event links to the one before it on the hash chain.

Verification checks every byte: each line and the manifest must be exactly the RFC 8785
form of their own content, each event's chain hash must recompute over its canonical bytes,
each event's inclusion proof must lead to the signed root, and the checkpoint must verify
with a trusted key. The per-event HMAC signatures are not exported: only the service can
check them, and here the Ed25519-signed checkpoint takes their place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from reference_impl.integrity.canonical import CanonicalizationError, canonicalize
from reference_impl.integrity.chain import GENESIS_HASH, HASH_SIZE, chain_hash
from reference_impl.integrity.checkpoint import (
    Checkpoint,
    NoteError,
    NoteVerifier,
    open_note,
)
from reference_impl.integrity.merkle import leaf_hash, verify_inclusion

__all__ = [
    "BUNDLE_FILES",
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleEvent",
    "BundleReport",
    "BundleWriter",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "auditkit-bundle/1"
MANIFEST: Final = "manifest.json"
CHECKPOINT: Final = "checkpoint.txt"
KEYS: Final = "keys.txt"
EVENTS: Final = "events.ndjson"
PROOFS: Final = "proofs.ndjson"
BUNDLE_FILES: Final = (MANIFEST, CHECKPOINT, KEYS, EVENTS, PROOFS)
"""Every file of a bundle."""


class BundleError(ValueError):
    """The bundle does not verify; the message is one line naming what broke."""


@dataclass(frozen=True, slots=True)
class BundleEvent:
    """One exported event: its stored bytes and chain fields, and its inclusion proof."""

    seq: int
    event_id: str
    recorded_at: str
    canonical: bytes
    prev_hash: bytes
    hash: bytes
    proof: tuple[bytes, ...]

    def event_record(self) -> dict[str, Any]:
        """The `events.ndjson` object."""
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "recorded_at": self.recorded_at,
            "canonical": base64.b64encode(self.canonical).decode(),
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }

    def proof_record(self, tree_size: int) -> dict[str, Any]:
        """The `proofs.ndjson` object."""
        return {
            "leaf_index": self.seq,
            "tree_size": tree_size,
            "proof": [base64.b64encode(p).decode() for p in self.proof],
        }


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What a verified bundle proves."""

    origin: str
    tenant: str
    tree_size: int
    root_hash: bytes
    events: int
    first_seq: int | None
    last_seq: int | None
    first_recorded_at: str | None
    last_recorded_at: str | None
    signed_by: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "origin": self.origin,
            "tenant": self.tenant,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_recorded_at": self.first_recorded_at,
            "last_recorded_at": self.last_recorded_at,
            "signed_by": list(self.signed_by),
        }


def _line(record: dict[str, Any]) -> bytes:
    return canonicalize(record) + b"\n"


# --8<-- [start:writer]
class BundleWriter:
    """Writes a bundle directory, streaming the events.

    Use as a context manager; `add` each event in seq order, then `finish`. Nothing is left
    behind as a valid bundle unless `finish` ran: the manifest is written last.

    Args:
        directory: The bundle directory; created, and must be empty if it exists.
        tenant: The tenant whose events these are.
        checkpoint_note: The signed checkpoint the proofs lead to.
        verifier_keys: The log's verifier keys (text form).
    """

    def __init__(
        self, directory: Path, tenant: str, checkpoint_note: str, verifier_keys: Sequence[str]
    ) -> None:
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(f"{directory} is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.tenant = tenant
        self.checkpoint = Checkpoint.parse(_note_text(checkpoint_note))
        # hashlib's hash objects have no public type to annotate with.
        self._digests: dict[str, Any] = {}
        self._write_whole(CHECKPOINT, checkpoint_note.encode())
        self._write_whole(KEYS, "".join(f"{k}\n" for k in verifier_keys).encode())
        self._events = self._open(EVENTS)
        self._proofs = self._open(PROOFS)
        self.count = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None

    def __enter__(self) -> BundleWriter:
        """Return the writer."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the files (without a manifest unless `finish` was called)."""
        self._events.close()
        self._proofs.close()

    def _write_whole(self, name: str, data: bytes) -> None:
        (self.directory / name).write_bytes(data)
        self._digests[name] = hashlib.sha256(data)

    def _open(self, name: str) -> IO[bytes]:
        self._digests[name] = hashlib.sha256()
        return (self.directory / name).open("wb")

    def _append(self, name: str, handle: IO[bytes], data: bytes) -> None:
        handle.write(data)
        self._digests[name].update(data)

    def add(self, event: BundleEvent) -> None:
        """Append one event and its proof.

        Raises:
            ValueError: If the event is not the next seq, or is outside the checkpoint.
        """
        if self.last_seq is not None and event.seq != self.last_seq + 1:
            raise ValueError(f"seq {event.seq} does not follow seq {self.last_seq}")
        if event.seq >= self.checkpoint.size:
            raise ValueError(f"seq {event.seq} is not in the checkpoint's tree")
        self._append(EVENTS, self._events, _line(event.event_record()))
        self._append(PROOFS, self._proofs, _line(event.proof_record(self.checkpoint.size)))
        self.count += 1
        self.first_seq = event.seq if self.first_seq is None else self.first_seq
        self.last_seq = event.seq

    def finish(self) -> dict[str, Any]:
        """Close the event files and write the manifest; returns the manifest."""
        self._events.close()
        self._proofs.close()
        manifest = _manifest(
            self.checkpoint,
            self.tenant,
            self.count,
            self.first_seq,
            self.last_seq,
            {name: d.hexdigest() for name, d in sorted(self._digests.items())},
        )
        (self.directory / MANIFEST).write_bytes(_line(manifest))
        return manifest


# --8<-- [end:writer]


def _note_text(note: str) -> str:
    """The text of a signed note, unverified (the writer trusts the note it was given)."""
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    return note[: split + 1]


def _manifest(
    checkpoint: Checkpoint,
    tenant: str,
    count: int,
    first_seq: int | None,
    last_seq: int | None,
    files: dict[str, str],
) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "origin": checkpoint.origin,
        "tenant": tenant,
        "tree_size": checkpoint.size,
        "events": count,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "files": files,
    }


# ---------------------------------------------------------------------------- verification


def _read(directory: Path, name: str) -> bytes:
    try:
        return (directory / name).read_bytes()
    except OSError:
        raise BundleError(f"{name}: missing or unreadable") from None


def _canonical_object(raw: bytes, where: str) -> dict[str, Any]:
    """Parse one JSON object that must be exactly its own RFC 8785 form plus a newline."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"{where}: not JSON") from None
    if not isinstance(value, dict):
        raise BundleError(f"{where}: not a JSON object")
    try:
        same = canonicalize(value) + b"\n" == raw
    except CanonicalizationError:
        same = False
    if not same:
        raise BundleError(f"{where}: not in canonical (RFC 8785) form; it was altered")
    return value


def _field(record: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = record.get(name)
    # bool is an int to isinstance; a seq of `true` must not pass as 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BundleError(f"{where}: field {name!r} is missing or has the wrong type")
    return value


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what}: not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise BundleError(f"{what}: not canonical base64")
    return raw


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise BundleError(f"{what}: not hex") from None
    if len(raw) != HASH_SIZE or raw.hex() != text:
        raise BundleError(f"{what}: not a 32-byte lower-case hex hash")
    return raw


def _lines(data: bytes, name: str) -> Iterator[tuple[int, bytes]]:
    if data and not data.endswith(b"\n"):
        raise BundleError(f"{name}: the last line does not end in a newline")
    # Split on newlines only: a stray carriage return must stay inside its line and fail
    # that line's canonical check, not silently start another one.
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        yield number, line + b"\n"


def _keys(data: bytes) -> list[NoteVerifier]:
    verifiers = []
    for number, line in _lines(data, KEYS):
        try:
            text = line.decode()
            verifier = NoteVerifier.from_vkey(text.rstrip("\n"))
        except (NoteError, UnicodeDecodeError) as exc:
            raise BundleError(f"{KEYS} line {number}: {exc}") from None
        if text != verifier.vkey + "\n":
            raise BundleError(f"{KEYS} line {number}: not a verifier key alone on its line")
        verifiers.append(verifier)
    if not verifiers:
        raise BundleError(f"{KEYS}: lists no key")
    return verifiers


# --8<-- [start:verify-bundle]
def verify_bundle(directory: Path, trusted: Iterable[NoteVerifier]) -> BundleReport:
    """Verify a bundle offline against trusted checkpoint keys.

    Args:
        directory: The bundle directory.
        trusted: The log's checkpoint keys the verifier trusts (given out of band).

    Returns:
        What the bundle proves.

    Raises:
        BundleError: On the first thing that does not verify; the message names the file,
            and the event (by seq) or the signature that broke.
    """
    trusted = tuple(trusted)
    manifest = _canonical_object(_read(directory, MANIFEST), MANIFEST)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: not a {BUNDLE_FORMAT} bundle")
    listed = _keys(_read(directory, KEYS))
    try:
        signed = open_note(_read(directory, CHECKPOINT).decode(), trusted)
        checkpoint = Checkpoint.parse(signed.text)
    except (NoteError, UnicodeDecodeError) as exc:
        raise BundleError(f"{CHECKPOINT}: the checkpoint does not verify: {exc}") from None
    if not any(v in listed for v in signed.verified_by):
        raise BundleError(f"{KEYS}: does not list the key that signed the checkpoint")
    tenant = _field(manifest, "tenant", str, MANIFEST)
    if manifest.get("origin") != checkpoint.origin or not checkpoint.origin.endswith("/" + tenant):
        raise BundleError(f"{MANIFEST}: origin or tenant differs from the signed checkpoint")
    events = _verify_events(directory, checkpoint)
    expected = _manifest(
        checkpoint,
        tenant,
        len(events),
        events[0][0] if events else None,
        events[-1][0] if events else None,
        {name: hashlib.sha256(_read(directory, name)).hexdigest() for name in BUNDLE_FILES[1:]},
    )
    for name in ("tree_size", "events", "first_seq", "last_seq", "files"):
        if manifest.get(name) != expected[name]:
            raise BundleError(f"{MANIFEST}: {name!r} does not match the bundle's content")
    if manifest != expected:
        raise BundleError(f"{MANIFEST}: holds fields this format does not define")
    return BundleReport(
        origin=checkpoint.origin,
        tenant=tenant,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        events=len(events),
        first_seq=events[0][0] if events else None,
        last_seq=events[-1][0] if events else None,
        first_recorded_at=events[0][1] if events else None,
        last_recorded_at=events[-1][1] if events else None,
        signed_by=tuple(v.vkey for v in signed.verified_by),
    )


# --8<-- [end:verify-bundle]


def _verify_events(directory: Path, checkpoint: Checkpoint) -> list[tuple[int, str]]:
    """Check every event and its proof; returns ``(seq, recorded_at)`` per event."""
    event_lines = list(_lines(_read(directory, EVENTS), EVENTS))
    proof_lines = list(_lines(_read(directory, PROOFS), PROOFS))
    if len(event_lines) != len(proof_lines):
        raise BundleError(
            f"{EVENTS} has {len(event_lines)} lines but {PROOFS} has {len(proof_lines)}: "
            "lines were added, removed or joined"
        )
    seen: list[tuple[int, str]] = []
    prev: bytes | None = None
    for (number, event_raw), (_, proof_raw) in zip(event_lines, proof_lines, strict=True):
        where = f"{EVENTS} line {number}"
        record = _canonical_object(event_raw, where)
        seq = _field(record, "seq", int, where)
        where = f"event seq {seq} ({EVENTS} line {number})"
        if seen and seq != seen[-1][0] + 1:
            raise BundleError(f"{where}: does not follow seq {seen[-1][0]}; events are missing")
        canonical = _b64(_field(record, "canonical", str, where), f"{where}: canonical")
        prev_hash = _hex32(_field(record, "prev_hash", str, where), f"{where}: prev_hash")
        digest = _hex32(_field(record, "hash", str, where), f"{where}: hash")
        if set(record) != {"seq", "event_id", "recorded_at", "canonical", "prev_hash", "hash"}:
            raise BundleError(f"{where}: has fields this format does not define")
        _check_content(record, canonical, where)
        if prev is not None and prev_hash != prev:
            raise BundleError(f"{where}: its prev_hash is not the hash of seq {seq - 1}")
        if seq == 0 and prev_hash != GENESIS_HASH:
            raise BundleError(f"{where}: seq 0 does not link to the genesis hash")
        if chain_hash(prev_hash, seq, canonical) != digest:
            raise BundleError(f"{where}: its hash does not match its canonical bytes")
        _check_proof(proof_raw, number, seq, canonical, checkpoint)
        prev = digest
        seen.append((seq, record["recorded_at"]))
    return seen


def _check_content(record: dict[str, Any], canonical: bytes, where: str) -> None:
    """The event's listed id and time must be the ones inside its canonical bytes."""
    try:
        content = json.loads(canonical)
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"{where}: its canonical bytes are not JSON") from None
    if not isinstance(content, dict):
        raise BundleError(f"{where}: its canonical bytes are not a JSON object")
    for name in ("event_id", "recorded_at"):
        if content.get(name) != _field(record, name, str, where):
            raise BundleError(f"{where}: {name} differs from its canonical bytes")


def _check_proof(raw: bytes, number: int, seq: int, canonical: bytes, cp: Checkpoint) -> None:
    where = f"inclusion proof of seq {seq} ({PROOFS} line {number})"
    record = _canonical_object(raw, where)
    if set(record) != {"leaf_index", "tree_size", "proof"}:
        raise BundleError(f"{where}: has fields this format does not define")
    if _field(record, "leaf_index", int, where) != seq:
        raise BundleError(f"{where}: is for leaf {record['leaf_index']}, not {seq}")
    if _field(record, "tree_size", int, where) != cp.size:
        raise BundleError(f"{where}: is for tree size {record['tree_size']}, not {cp.size}")
    hashes = [
        _b64(h, where) if isinstance(h, str) else b"" for h in _field(record, "proof", list, where)
    ]
    if not verify_inclusion(leaf_hash(canonical), seq, cp.size, hashes, cp.root_hash):
        raise BundleError(f"{where}: does not lead to the checkpoint's root hash")
