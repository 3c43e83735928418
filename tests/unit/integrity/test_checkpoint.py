"""C2SP signed notes and tlog-checkpoints: known answers, round trips, refusals."""

from __future__ import annotations

import base64

import pytest

from reference_impl.integrity.checkpoint import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    key_id_of,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from reference_impl.integrity.merkle import EMPTY_ROOT

# The example key and note of the Go reference implementation (golang.org/x/mod/sumdb/note).
# Ed25519 is deterministic, so signing the same text with the same seed must give exactly
# the same signature line.
GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # 0x01 ‖ seed
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

SIGNER = NoteSigner("auditkit.test/log-key", b"\x07" * 32)
OTHER = NoteSigner("auditkit.test/other-key", b"\x08" * 32)
CHECKPOINT = Checkpoint("auditkit.test/log/clinic-7", 1042, bytes(range(32)))


def test_go_reference_key_and_note() -> None:
    signer = NoteSigner("PeterNeumann", base64.b64decode(GO_SKEY_B64)[1:])
    assert signer.verifier.vkey == GO_VKEY
    assert signer.verifier.key_id.hex() == "c74f20a3"
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    opened = open_note(GO_NOTE, [NoteVerifier.from_vkey(GO_VKEY)])
    assert opened.text == GO_TEXT
    assert opened.verified_by == (signer.verifier,)


def test_key_id_is_the_spec_hash() -> None:
    import hashlib

    public = SIGNER.verifier.public_key
    expected = hashlib.sha256(b"auditkit.test/log-key\n\x01" + public).digest()[:4]
    assert key_id_of("auditkit.test/log-key", 0x01, public) == expected == SIGNER.verifier.key_id
    assert NoteVerifier.from_vkey(SIGNER.verifier.vkey) == SIGNER.verifier
    assert "\\x07" not in repr(SIGNER) and SIGNER.verifier.vkey in repr(SIGNER)


def test_checkpoint_body_and_round_trip() -> None:
    root_b64 = base64.b64encode(bytes(range(32))).decode()
    assert CHECKPOINT.body() == f"auditkit.test/log/clinic-7\n1042\n{root_b64}\n"
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    assert note.startswith(CHECKPOINT.body() + "\n\u2014 auditkit.test/log-key ")
    assert open_checkpoint(note, [SIGNER.verifier]) == CHECKPOINT
    assert open_checkpoint(note, [SIGNER.verifier], origin=CHECKPOINT.origin) == CHECKPOINT
    empty = Checkpoint("o", 0, EMPTY_ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(empty.body()) == empty


def test_unknown_signatures_are_ignored_and_a_known_bad_one_rejects() -> None:
    note = sign_note(CHECKPOINT.body(), [OTHER, SIGNER])
    # OTHER is unknown to this verifier: its signature is skipped, SIGNER's verifies.
    assert open_note(note, [SIGNER.verifier]).verified_by == (SIGNER.verifier,)
    # Same name, another key: an unknown key (the pair name+id does not match) is ignored...
    impostor = NoteSigner("auditkit.test/log-key", b"\x09" * 32)
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        open_note(sign_note(CHECKPOINT.body(), [impostor]), [SIGNER.verifier])
    # ...but a known key's signature that fails rejects the whole note.
    lines = note.split("\n")
    good = lines[-2]
    raw = bytearray(base64.b64decode(good.split(" ")[2]))
    raw[10] ^= 1
    lines[-2] = f"{good.rsplit(' ', 1)[0]} {base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(NoteError, match="is invalid"):
        open_note("\n".join(lines), [SIGNER.verifier, OTHER.verifier])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.replace("1042", "1043"), "is invalid"),
        (lambda n: n.replace("clinic-7", "clinic-8"), "is invalid"),
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n[:-1], "does not end in a newline"),
        (lambda n: n.replace("\u2014 ", "- "), "em dash"),
        (lambda n: n.replace("\u2014 ", "\u2014 \t"), "control character"),
        (lambda n: n.rstrip("\n") + "=\n", "base64"),
        (lambda n: n.replace("auditkit.test/log-key ", "auditkit.test/log-key  "), "signature"),
        (lambda n: n + "\u2014 x AAAA\n", "too short"),
        # The text ends at the last blank line, so an extra one changes the signed text.
        (lambda n: n.replace("\n\n", "\n\n\n"), "is invalid"),
        (lambda n: n.replace("log-key", "log+key", 1), r"contains a space or '\+'"),
    ],
)
def test_altered_notes_are_refused(change: object, message: str) -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    altered = change(note)  # type: ignore[operator]
    assert altered != note
    with pytest.raises(NoteError, match=message):
        open_checkpoint(altered, [SIGNER.verifier])


def test_every_single_byte_change_is_refused() -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER).encode()
    for i in range(len(note)):
        data = bytearray(note)
        data[i] ^= 0x01
        try:
            text = bytes(data).decode()
        except UnicodeDecodeError:
            continue  # not even text: refused before any parsing
        with pytest.raises(NoteError):
            open_checkpoint(text, [SIGNER.verifier])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("o\n12\n", "origin, a tree size and a root hash"),
        ("o\n012\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", "decimal"),
        ("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "not 32 bytes"),
        ("o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n", "extension line is empty"),
        ("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "origin is empty"),
    ],
)
def test_malformed_checkpoint_bodies(body: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(body)


def test_origin_must_match_when_asked() -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    with pytest.raises(NoteError, match=r"not 'auditkit\.test/log/other'"):
        open_checkpoint(note, [SIGNER.verifier], origin="auditkit.test/log/other")


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumanm+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong name
        "PeterNeumann+c74f20a3+AhpctgcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not Ed25519
        "PeterNeumann+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_signing_refuses_what_is_not_a_note_text() -> None:
    with pytest.raises(NoteError, match="newline"):
        sign_note("no newline", [SIGNER])
    with pytest.raises(NoteError, match="at least one"):
        sign_note("text\n", [])
    with pytest.raises(NoteError, match="32 bytes"):
        NoteSigner("k", b"short")
