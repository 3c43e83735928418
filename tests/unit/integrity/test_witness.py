"""The pure witness: accept only checkpoints that extend the last accepted one."""

from __future__ import annotations

import pytest

from reference_impl.integrity.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from reference_impl.integrity.merkle import MemoryTree, leaf_hash
from reference_impl.integrity.witness import (
    HTTP_STATUS,
    Outcome,
    SubmissionError,
    Witness,
    format_submission,
    parse_submission,
)

LOG = NoteSigner("auditkit.test/log-key", b"\x01" * 32)
ORIGIN = "auditkit.test/log/t1"
TREE = MemoryTree([leaf_hash(bytes([i])) for i in range(20)])


def _note(size: int, tree: MemoryTree = TREE, signer: NoteSigner = LOG) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), signer)


def _submit(witness: Witness, old: int, new: int, tree: MemoryTree = TREE) -> Outcome:
    body = format_submission(old, tree.consistency_proof(old, new), _note(new, tree))
    return witness.add_checkpoint(body).outcome


def test_accepts_a_growing_log_and_remembers_its_head() -> None:
    witness = Witness([LOG.verifier])
    assert _submit(witness, 0, 3) is Outcome.ACCEPTED
    assert _submit(witness, 3, 3) is Outcome.ACCEPTED  # the same head again
    assert _submit(witness, 3, 11) is Outcome.ACCEPTED
    assert _submit(witness, 11, 20) is Outcome.ACCEPTED
    head = witness.latest(ORIGIN)
    assert head is not None
    assert (head.size, head.root_hash) == (20, TREE.root(20))
    # State survives a restart as data.
    again = Witness([LOG.verifier], witness.state)
    assert _submit(again, 20, 20) is Outcome.ACCEPTED


def test_conflict_tells_the_submitter_the_size_to_prove_from() -> None:
    witness = Witness([LOG.verifier])
    _submit(witness, 0, 5)
    decision = witness.submit(_note(9), 0, TREE.consistency_proof(0, 9))
    assert decision.outcome is Outcome.CONFLICT
    assert decision.latest_size == 5
    assert HTTP_STATUS[decision.outcome] == 409
    assert _submit(witness, 5, 9) is Outcome.ACCEPTED


def test_refuses_a_rewritten_history() -> None:
    witness = Witness([LOG.verifier])
    _submit(witness, 0, 8)
    forged = MemoryTree([leaf_hash(bytes([i]) + (b"x" if i == 3 else b"")) for i in range(20)])
    decision = witness.add_checkpoint(
        format_submission(8, forged.consistency_proof(8, 12), _note(12, forged))
    )
    assert decision.outcome is Outcome.INCONSISTENT
    assert "history changed" in decision.reason
    assert HTTP_STATUS[decision.outcome] == 422
    head = witness.latest(ORIGIN)
    assert head is not None and head.size == 8  # nothing moved


def test_refuses_rollbacks_forks_and_bad_signatures() -> None:
    witness = Witness([LOG.verifier])
    _submit(witness, 0, 10)
    smaller = witness.submit(_note(6), 10, [])
    assert smaller.outcome is Outcome.ROLLBACK
    forked_tree = MemoryTree([leaf_hash(bytes([i, 1])) for i in range(20)])
    fork = witness.submit(_note(10, forked_tree), 10, [])
    assert fork.outcome is Outcome.FORK
    stranger = NoteSigner("auditkit.test/log-key", b"\x02" * 32)
    bad = witness.submit(_note(12, signer=stranger), 10, TREE.consistency_proof(10, 12))
    assert bad.outcome is Outcome.BAD_NOTE
    assert witness.add_checkpoint("nonsense").outcome is Outcome.BAD_NOTE
    head = witness.latest(ORIGIN)
    assert head is not None and head.size == 10


def test_submission_format_round_trips() -> None:
    proof = TREE.consistency_proof(5, 13)
    body = format_submission(5, proof, _note(13))
    assert body.startswith("old 5\n")
    assert parse_submission(body) == (5, proof, _note(13))
    assert parse_submission(format_submission(0, [], _note(2))) == (0, [], _note(2))


@pytest.mark.parametrize(
    "body",
    ["old 5\nnot-base64!\n\nx\n", "old 05\n\nx\n", "new 5\n\nx\n", "old 5\n", "old -1\n\nx\n"],
)
def test_malformed_submissions(body: str) -> None:
    with pytest.raises(SubmissionError):
        parse_submission(body)
