"""Witness logic: accept a log's checkpoint only if it extends what was accepted before.

A witness remembers, per origin, the last checkpoint it accepted. It accepts a new one only
when

1. the note verifies with a trusted log key and its body is a checkpoint;
2. the submitter's idea of the witness's last size (``old_size``) is right, otherwise it
   answers *conflict* with its own size so that the submitter can retry with the right
   proof (as in c2sp.org/tlog-witness);
3. the size did not shrink and, at the same size, the root did not change;
4. the consistency proof from the last accepted checkpoint to the new one verifies.

A log that rewrote history can produce a self-consistent tree and sign it, but it cannot
produce a consistency proof from the root the witness holds. That is what makes a rewrite
provable rather than merely detectable by the operator.

Submissions use the request body of c2sp.org/tlog-witness `add-checkpoint`: an ``old
<size>`` line, one base64 proof hash per line, a blank line, then the signed checkpoint
([`format_submission`][reference_impl.integrity.witness.format_submission]). Directory and
HTTP witnesses both carry exactly that text, and `HTTP_STATUS` maps each outcome to that
spec's status code.

This module holds no I/O: the state is a mapping the caller loads and saves.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from reference_impl.integrity.checkpoint import (
    Checkpoint,
    NoteError,
    NoteVerifier,
    open_checkpoint,
)
from reference_impl.integrity.merkle import EMPTY_ROOT, verify_consistency

__all__ = [
    "HTTP_STATUS",
    "MAX_PROOF_LINES",
    "Decision",
    "Outcome",
    "SubmissionError",
    "Witness",
    "WitnessedCheckpoint",
    "format_submission",
    "parse_submission",
]

MAX_PROOF_LINES: Final = 63
"""Most consistency proof hashes a submission may carry (tlog-witness)."""

_OLD_LINE: Final = re.compile(r"^old (0|[1-9][0-9]*)$")


class Outcome(StrEnum):
    """What a witness did with a checkpoint."""

    ACCEPTED = "accepted"
    CONFLICT = "conflict"
    """The submitter's ``old_size`` is not the witness's; retry from ``latest_size``."""
    BAD_NOTE = "bad_note"
    ROLLBACK = "rollback"
    FORK = "fork"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True, slots=True)
class WitnessedCheckpoint:
    """The last checkpoint a witness accepted for one origin."""

    origin: str
    size: int
    root_hash: bytes
    note: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A witness's answer to one submission.

    Attributes:
        outcome: Accepted, or why not.
        reason: One sentence for people.
        latest_size: The witness's size for the origin after the decision (0 if none).
        origin: The checkpoint's origin, when the note could be read.
    """

    outcome: Outcome
    reason: str
    latest_size: int
    origin: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether the checkpoint was accepted."""
        return self.outcome is Outcome.ACCEPTED


HTTP_STATUS: Final[Mapping[Outcome, int]] = {
    Outcome.ACCEPTED: 200,
    Outcome.CONFLICT: 409,
    Outcome.BAD_NOTE: 403,
    Outcome.ROLLBACK: 400,
    Outcome.FORK: 409,
    Outcome.INCONSISTENT: 422,
}
"""The tlog-witness status code of each outcome (a 409 for a conflict carries the size)."""


class SubmissionError(ValueError):
    """A submission body that is not an `add-checkpoint` request."""


# --8<-- [start:submission]
def format_submission(old_size: int, proof: Sequence[bytes], note: str) -> str:
    """The `add-checkpoint` request body: old size, proof lines, blank line, checkpoint.

    Args:
        old_size: The size the witness last accepted for this log (0 for none).
        proof: Consistency proof from ``old_size`` to the checkpoint's size.
        note: The signed checkpoint.

    Returns:
        The request body.
    """
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + note


def parse_submission(body: str) -> tuple[int, list[bytes], str]:
    """Split an `add-checkpoint` body into old size, proof hashes and signed checkpoint.

    Raises:
        SubmissionError: If the body is malformed.
    """
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise SubmissionError("no blank line between the proof and the checkpoint")
    first, *proof_lines = head.split("\n")
    m = _OLD_LINE.match(first)
    if m is None:
        raise SubmissionError("the first line is not 'old <size>'")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise SubmissionError(f"more than {MAX_PROOF_LINES} proof lines")
    proof = []
    for line in proof_lines:
        try:
            proof.append(base64.b64decode(line, validate=True))
        except (binascii.Error, ValueError):
            raise SubmissionError("a proof line is not base64") from None
    return int(m.group(1)), proof, note


# --8<-- [end:submission]


# --8<-- [start:witness]
class Witness:
    """Checks checkpoints against the last accepted one per origin.

    Args:
        verifiers: The log keys the witness trusts (every key the log ever used).
        state: The last accepted checkpoint per origin, e.g. loaded from disk.
    """

    def __init__(
        self,
        verifiers: Iterable[NoteVerifier],
        state: Mapping[str, WitnessedCheckpoint] | None = None,
    ) -> None:
        self._verifiers = tuple(verifiers)
        self._state: dict[str, WitnessedCheckpoint] = dict(state or {})

    @property
    def state(self) -> dict[str, WitnessedCheckpoint]:
        """The last accepted checkpoint per origin (a copy)."""
        return dict(self._state)

    def latest(self, origin: str) -> WitnessedCheckpoint | None:
        """The last accepted checkpoint of ``origin``, if any."""
        return self._state.get(origin)

    def add_checkpoint(self, body: str) -> Decision:
        """Decide on an `add-checkpoint` request body.

        Returns:
            The decision; a malformed body is a ``BAD_NOTE``.
        """
        try:
            old_size, proof, note = parse_submission(body)
        except SubmissionError as exc:
            return Decision(Outcome.BAD_NOTE, f"the submission is malformed: {exc}", 0)
        return self.submit(note, old_size, proof)

    def submit(self, note: str, old_size: int, proof: Sequence[bytes]) -> Decision:
        """Decide on a signed checkpoint.

        Args:
            note: The signed checkpoint note.
            old_size: The size the submitter believes the witness last accepted (0 for
                none).
            proof: Consistency proof from ``old_size`` to the checkpoint's size.

        Returns:
            The decision; the state changes only on acceptance.
        """
        try:
            checkpoint = open_checkpoint(note, self._verifiers)
        except NoteError as exc:
            return Decision(Outcome.BAD_NOTE, f"the checkpoint does not verify: {exc}", 0)
        origin = checkpoint.origin
        last = self._state.get(origin)
        size, root_hash = (last.size, last.root_hash) if last else (0, EMPTY_ROOT)
        if old_size != size:
            return Decision(
                Outcome.CONFLICT,
                f"the witness holds size {size} for {origin}, not {old_size}",
                size,
                origin,
            )
        verdict = _judge(checkpoint, size, root_hash, proof)
        if verdict is not None:
            return verdict
        self._state[origin] = WitnessedCheckpoint(
            origin, checkpoint.size, checkpoint.root_hash, note
        )
        return Decision(
            Outcome.ACCEPTED,
            f"size {checkpoint.size} extends size {size}",
            checkpoint.size,
            origin,
        )


def _judge(
    checkpoint: Checkpoint, size: int, root_hash: bytes, proof: Sequence[bytes]
) -> Decision | None:
    """None if ``checkpoint`` extends the tree ``(size, root_hash)``, else the refusal."""
    origin = checkpoint.origin
    if checkpoint.size < size:
        return Decision(
            Outcome.ROLLBACK,
            f"size {checkpoint.size} is smaller than the accepted size {size}",
            size,
            origin,
        )
    if checkpoint.size == size and checkpoint.root_hash != root_hash:
        return Decision(
            Outcome.FORK,
            f"a different root hash for the accepted size {size}: the log forked",
            size,
            origin,
        )
    if not verify_consistency(size, checkpoint.size, root_hash, checkpoint.root_hash, proof):
        return Decision(
            Outcome.INCONSISTENT,
            f"the consistency proof from size {size} to size {checkpoint.size} does not "
            "verify: the log's history changed",
            size,
            origin,
        )
    return None


# --8<-- [end:witness]
