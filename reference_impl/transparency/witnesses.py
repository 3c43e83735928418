"""Witnesses a new checkpoint is published to: a directory, and HTTP webhooks.

Both carry the c2sp.org/tlog-witness `add-checkpoint` request body (old size, consistency
proof lines, blank line, signed checkpoint) and answer with a
[`Decision`][reference_impl.integrity.witness.Decision].

**Directory witness.** The log writes each submission to
`<dir>/<origin>/inbox/<size>.req`; the witness side (`DirectoryWitness.process`, pure
`reference_impl.integrity.witness` logic plus files) checks it against
`<dir>/<origin>/latest.checkpoint`, the last checkpoint it accepted, and moves it to
`accepted/` or to `rejected/` beside a `.reason` file. Here both sides run in the service
process, one after the other; where the directory is shared storage (a bucket, a volume
another team mounts), the witness side runs elsewhere with
`auditkit log witness-dir DIR --key VKEY`, and holds its own copy of the log's keys.

**Webhook witness.** `POST <url>` with the body as `text/plain`. The status code is the
tlog-witness one: 200 accepted, 409 conflict (body: the witness's size, decimal, for a
retry from that size; the same size as sent means a fork), 403 signature, 400 rollback,
422 inconsistent proof.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from reference_impl.integrity.checkpoint import NoteError, NoteVerifier, open_checkpoint
from reference_impl.integrity.witness import (
    Decision,
    Outcome,
    Witness,
    WitnessedCheckpoint,
    format_submission,
)

__all__ = ["DirectoryWitness", "WebhookWitness", "WitnessClient", "WitnessUnavailableError"]


class WitnessUnavailableError(Exception):
    """The witness could not be reached or answered something unreadable."""


class WitnessClient(Protocol):
    """Where the log submits a checkpoint."""

    @property
    def name(self) -> str:
        """A stable name (kept in `witness_states` and used as a metric label)."""
        ...

    async def submit(self, note: str, old_size: int, proof: Sequence[bytes]) -> Decision:
        """Submit a checkpoint with a consistency proof from ``old_size``.

        Raises:
            WitnessUnavailableError: The witness did not answer.
        """
        ...


# --8<-- [start:directory-witness]
class DirectoryWitness:
    """A witness that lives in a directory.

    Args:
        root: The witness directory.
        verifiers: The log keys the witness trusts.
    """

    def __init__(self, root: Path, verifiers: Sequence[NoteVerifier]) -> None:
        self.root = root
        self.verifiers = tuple(verifiers)

    @property
    def name(self) -> str:
        """``directory`` (one directory witness per service; its path stays server-side)."""
        return "directory"

    def _origin_dir(self, origin: str) -> Path:
        return self.root / quote(origin, safe="")

    def latest_note(self, origin: str) -> str | None:
        """The last checkpoint this witness accepted for ``origin``, as it stored it."""
        path = self._origin_dir(origin) / "latest.checkpoint"
        return path.read_text(encoding="utf-8") if path.exists() else None

    async def submit(self, note: str, old_size: int, proof: Sequence[bytes]) -> Decision:
        """Write the submission to the inbox, then let the witness side process it."""
        return await asyncio.to_thread(self._submit, note, old_size, list(proof))

    def _submit(self, note: str, old_size: int, proof: list[bytes]) -> Decision:
        try:
            checkpoint = open_checkpoint(note, self.verifiers)
        except NoteError as exc:
            return Decision(Outcome.BAD_NOTE, f"the checkpoint does not verify: {exc}", 0)
        inbox = self._origin_dir(checkpoint.origin) / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        request = inbox / f"{checkpoint.size}.req"
        request.write_text(format_submission(old_size, proof, note), encoding="utf-8")
        return self.process_one(request)

    def process(self) -> list[tuple[Path, Decision]]:
        """Decide on every submission waiting in any inbox, oldest size first."""
        out: list[tuple[Path, Decision]] = []
        for inbox in sorted(self.root.glob("*/inbox")):
            requests = sorted(inbox.glob("*.req"), key=lambda p: int(p.stem))
            out.extend((request, self.process_one(request)) for request in requests)
        return out

    def process_one(self, request: Path) -> Decision:
        """Decide on one submission file and file it under `accepted/` or `rejected/`."""
        origin_dir = request.parent.parent
        latest = origin_dir / "latest.checkpoint"
        state = {}
        if latest.exists():
            note = latest.read_text(encoding="utf-8")
            cp = open_checkpoint(note, self.verifiers)
            state[cp.origin] = WitnessedCheckpoint(cp.origin, cp.size, cp.root_hash, note)
        witness = Witness(self.verifiers, state)
        decision = witness.add_checkpoint(request.read_text(encoding="utf-8"))
        target = origin_dir / ("accepted" if decision.accepted else "rejected")
        target.mkdir(exist_ok=True)
        if decision.accepted and decision.origin is not None:
            accepted = witness.latest(decision.origin)
            assert accepted is not None
            tmp = latest.with_suffix(".tmp")
            tmp.write_text(accepted.note, encoding="utf-8")
            tmp.replace(latest)
        else:
            (target / f"{request.stem}.reason").write_text(
                f"{decision.outcome}: {decision.reason}\n", encoding="utf-8"
            )
        shutil.move(request, target / request.name)
        return decision


# --8<-- [end:directory-witness]


# --8<-- [start:webhook-witness]
class WebhookWitness:
    """A witness behind an HTTP endpoint.

    Args:
        url: Where to POST submissions.
        timeout_s: Longest wait for an answer.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        """The URL."""
        return self.url

    async def submit(self, note: str, old_size: int, proof: Sequence[bytes]) -> Decision:
        """POST the submission and turn the status code into a decision."""
        body = format_submission(old_size, proof, note)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(
                    self.url, content=body.encode(), headers={"Content-Type": "text/plain"}
                )
        except httpx.HTTPError as exc:
            raise WitnessUnavailableError(f"{type(exc).__name__}") from None
        reason = response.text.strip()[:300]
        status = response.status_code
        if status == 200:
            # The log wrote the note itself; its second line is the size just accepted.
            return Decision(Outcome.ACCEPTED, "accepted", int(note.split("\n", 2)[1]))
        if status == 409:
            try:
                size = int(response.text.strip())
            except ValueError:
                raise WitnessUnavailableError("a 409 without a tree size") from None
            outcome = Outcome.FORK if size == old_size else Outcome.CONFLICT
            return Decision(outcome, f"the witness holds size {size}", size)
        refused = {403: Outcome.BAD_NOTE, 400: Outcome.ROLLBACK, 422: Outcome.INCONSISTENT}
        if status not in refused:
            raise WitnessUnavailableError(f"HTTP {status}")
        return Decision(refused[status], reason or f"HTTP {status}", old_size)


# --8<-- [end:webhook-witness]
