"""Export bundles verify offline, and a change to any byte of one is named.

Bundles here are built with the pure package only (a memory tree, a signer), exactly as the
export writes them, so every byte position of every file can be tried quickly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reference_impl.integrity import canonicalize, chain_hash
from reference_impl.integrity.bundle import (
    BUNDLE_FILES,
    BundleError,
    BundleEvent,
    BundleWriter,
    verify_bundle,
)
from reference_impl.integrity.chain import GENESIS_HASH
from reference_impl.integrity.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from reference_impl.integrity.merkle import MemoryTree, leaf_hash

OLD = NoteSigner("auditkit.test/ckpt-2025", b"\x03" * 32)
KEY = NoteSigner("auditkit.test/ckpt-2026", b"\x04" * 32)
TENANT = "clinic-7"
ORIGIN = f"auditkit.test/log/{TENANT}"


def _events(n: int) -> list[tuple[bytes, bytes, bytes, str, str]]:
    """``(canonical, prev_hash, hash, event_id, recorded_at)`` of a chained log."""
    out = []
    prev = GENESIS_HASH
    for seq in range(n):
        event_id = f"00000000-0000-4000-8000-{seq:012d}"
        recorded_at = f"2026-01-15T09:{seq // 60:02d}:{seq % 60:02d}.000000Z"
        canonical = canonicalize(
            {"event_id": event_id, "recorded_at": recorded_at, "tenant": TENANT, "n": seq}
        )
        digest = chain_hash(prev, seq, canonical)
        out.append((canonical, prev, digest, event_id, recorded_at))
        prev = digest
    return out


def build(directory: Path, n: int = 12, first: int = 3, last: int = 9) -> Path:
    """A bundle of events ``first..last`` of an ``n``-event log, checkpointed at ``n``."""
    events = _events(n)
    tree = MemoryTree([leaf_hash(e[0]) for e in events])
    note = sign_checkpoint(Checkpoint(ORIGIN, n, tree.root()), KEY)
    keys = [OLD.verifier.vkey, KEY.verifier.vkey]
    with BundleWriter(directory, TENANT, note, keys) as writer:
        for seq in range(first, last + 1):
            canonical, prev, digest, event_id, recorded_at = events[seq]
            writer.add(
                BundleEvent(
                    seq, event_id, recorded_at, canonical, prev, digest,
                    tuple(tree.inclusion_proof(seq)),
                )
            )  # fmt: skip
        writer.finish()
    return directory


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("bundle") / "b")


def test_a_bundle_verifies_with_the_key_alone(bundle: Path) -> None:
    report = verify_bundle(bundle, [KEY.verifier])
    assert (report.origin, report.tenant, report.tree_size) == (ORIGIN, TENANT, 12)
    assert (report.events, report.first_seq, report.last_seq) == (7, 3, 9)
    assert report.first_recorded_at == "2026-01-15T09:00:03.000000Z"
    assert report.signed_by == (KEY.verifier.vkey,)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "auditkit-bundle/1"
    assert set(manifest["files"]) == set(BUNDLE_FILES[1:])


def test_a_bundle_from_seq_zero_links_to_genesis(tmp_path: Path) -> None:
    report = verify_bundle(build(tmp_path / "b", n=5, first=0, last=4), [KEY.verifier])
    assert (report.first_seq, report.last_seq) == (0, 4)


def test_only_the_trusted_key_counts(bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"checkpoint\.txt: .*no signature from a trusted key"):
        verify_bundle(bundle, [OLD.verifier])


def _flipped(bundle: Path, tmp: Path, name: str, offset: int) -> Path:
    copy = tmp / f"{name}-{offset}"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / name).read_bytes())
    data[offset] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_every_byte_of_every_file_matters(bundle: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    original = (copy / name).read_bytes()
    # Every byte of the small files, and some 600 positions spread over the larger ones.
    for offset in range(0, len(original), max(1, len(original) // 600)):
        data = bytearray(original)
        data[offset] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        with pytest.raises(BundleError) as broke:
            verify_bundle(copy, [KEY.verifier])
        message = str(broke.value)
        assert "\n" not in message
        assert name in message, (offset, message)
    (copy / name).write_bytes(original)
    verify_bundle(copy, [KEY.verifier])


def test_messages_name_the_event_or_the_proof(bundle: Path, tmp_path: Path) -> None:
    events = (bundle / "events.ndjson").read_bytes()
    line_start = events.index(b"\n", events.index(b"\n") + 1) + 1  # third line: seq 5
    at_canonical = line_start + events[line_start:].index(b'"canonical":"') + 20
    copy = _flipped(bundle, tmp_path, "events.ndjson", at_canonical)
    with pytest.raises(BundleError, match=r"^event seq 5 \(events\.ndjson line 3\): "):
        verify_bundle(copy, [KEY.verifier])

    proofs = (bundle / "proofs.ndjson").read_bytes()
    at_hash = proofs.index(b'"proof":["') + 12
    copy = _flipped(bundle, tmp_path, "proofs.ndjson", at_hash)
    with pytest.raises(BundleError, match=r"inclusion proof of seq 3 \(proofs\.ndjson line 1\)"):
        verify_bundle(copy, [KEY.verifier])


def test_removed_or_reordered_lines_are_caught(bundle: Path, tmp_path: Path) -> None:
    for name, edit, named in [
        ("events.ndjson", lambda lines: lines[:2] + lines[3:], "lines were added, removed"),
        ("events.ndjson", lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "not follow"),
        ("proofs.ndjson", lambda lines: [lines[1], lines[0], *lines[2:]], "is for leaf"),
        ("keys.txt", lambda lines: lines[1:], "manifest.json: 'files'"),
    ]:
        copy = tmp_path / f"edit-{name}-{named}"
        shutil.copytree(bundle, copy)
        lines = (copy / name).read_text().splitlines(keepends=True)
        (copy / name).write_text("".join(edit(lines)))  # type: ignore[operator]
        with pytest.raises(BundleError, match=named):
            verify_bundle(copy, [KEY.verifier])


def test_a_missing_file_is_named(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "missing"
    shutil.copytree(bundle, copy)
    (copy / "proofs.ndjson").unlink()
    with pytest.raises(BundleError, match=r"^proofs\.ndjson: missing"):
        verify_bundle(copy, [KEY.verifier])


def test_the_writer_refuses_gaps_and_a_used_directory(tmp_path: Path) -> None:
    events = _events(4)
    tree = MemoryTree([leaf_hash(e[0]) for e in events])
    note = sign_checkpoint(Checkpoint(ORIGIN, 4, tree.root()), KEY)

    def event(seq: int) -> BundleEvent:
        canonical, prev, digest, event_id, recorded_at = events[seq]
        return BundleEvent(seq, event_id, recorded_at, canonical, prev, digest, ())

    with BundleWriter(tmp_path / "w", TENANT, note, [KEY.verifier.vkey]) as writer:
        writer.add(event(0))
        with pytest.raises(ValueError, match="does not follow"):
            writer.add(event(2))
    assert not (tmp_path / "w" / "manifest.json").exists()
    with pytest.raises(FileExistsError):
        BundleWriter(tmp_path / "w", TENANT, note, [KEY.verifier.vkey])
