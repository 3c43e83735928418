"""Every proof of every tree of 1..2000 leaves verifies, and no altered proof does.

Proofs are also compared with a second implementation written straight from the recursive
definitions of RFC 9162 §2.1 (MTH, PATH, PROOF/SUBPROOF), so that the iterative code and the
specification cannot drift apart.

A note on sizes. RFC 9162 verification binds a proof to a root, and a checkpoint binds the
root to its size; a proof for ``(i, n)`` may walk the same way for another size, so an
"altered size" is always checked against the root of the tree at that size, which is what
a verifier holding a signed checkpoint for that size has.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_impl.integrity.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    extend_frontier,
    frontier_root,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.property

MAX_SIZE = 2000


def _leaves(n: int, salt: int) -> list[bytes]:
    return [salt.to_bytes(4, "big") + i.to_bytes(4, "big") for i in range(n)]


# -- RFC 9162 §2.1, transcribed recursively -----------------------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n])."""
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return leaf_hash(d[0])
    k = _k(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


# -- strategies -------------------------------------------------------------------------

sizes = st.one_of(
    st.integers(1, 40),
    st.sampled_from([63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 1023, 1024, 1025]),
    st.integers(1, MAX_SIZE),
)


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8 % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


# -- every proof verifies ----------------------------------------------------------------


@settings(deadline=None, max_examples=100)
@given(n=sizes, salt=st.integers(0, 2**32 - 1))
@example(n=MAX_SIZE, salt=0)
@example(n=1, salt=0)
def test_every_proof_of_a_tree_verifies(n: int, salt: int) -> None:
    data = _leaves(n, salt)
    tree = MemoryTree([leaf_hash(x) for x in data])
    top = tree.root()
    for i, x in enumerate(data):
        assert verify_inclusion(leaf_hash(x), i, n, tree.inclusion_proof(i), top)
    for m in range(n + 1):
        proof = tree.consistency_proof(m, n)
        assert verify_consistency(m, n, tree.root(m), top, proof)
    # The frontier an append-only store keeps gives the same root as the whole tree.
    size, frontier, _ = extend_frontier(0, [], [leaf_hash(x) for x in data])
    assert (size, frontier_root(frontier)) == (n, top)


@settings(deadline=None, max_examples=60)
@given(data=st.data(), n=st.integers(1, 300), salt=st.integers(0, 2**32 - 1))
def test_proofs_are_the_rfc_definitions(data: st.DataObject, n: int, salt: int) -> None:
    leaves = _leaves(n, salt)
    tree = MemoryTree([leaf_hash(x) for x in leaves])
    second = data.draw(st.integers(1, n), label="second")
    first = data.draw(st.integers(1, second), label="first")
    index = data.draw(st.integers(0, second - 1), label="index")
    assert tree.root(second) == mth(leaves[:second])
    assert tree.inclusion_proof(index, second) == path(index, leaves[:second])
    expected = [] if first == second else subproof(first, leaves[:second], True)
    assert tree.consistency_proof(first, second) == expected


# -- no altered proof verifies -----------------------------------------------------------


@settings(deadline=None, max_examples=500)
@given(data=st.data(), n=sizes, salt=st.integers(0, 2**32 - 1))
def test_altered_inclusion_proofs_fail(data: st.DataObject, n: int, salt: int) -> None:
    leaves = _leaves(n, salt)
    tree = MemoryTree([leaf_hash(x) for x in leaves])
    i = data.draw(st.integers(0, n - 1), label="index")
    leaf, proof, top = leaf_hash(leaves[i]), tree.inclusion_proof(i), tree.root()
    assert verify_inclusion(leaf, i, n, proof, top)
    bit = data.draw(st.integers(0, 255), label="bit")
    change = data.draw(
        st.sampled_from(["leaf", "proof", "index", "size", "root", "drop", "extra"]),
        label="change",
    )
    if change == "leaf":
        assert not verify_inclusion(_flip(leaf, bit), i, n, proof, top)
    elif change == "root":
        assert not verify_inclusion(leaf, i, n, proof, _flip(top, bit))
    elif change == "proof" and proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="position")
        altered = [_flip(p, bit) if k == j else p for k, p in enumerate(proof)]
        assert not verify_inclusion(leaf, i, n, altered, top)
    elif change == "index":
        other = data.draw(st.integers(-1, n + 1).filter(lambda v: v != i), label="other")
        assert not verify_inclusion(leaf, other, n, proof, top)
    elif change == "size":
        other = data.draw(st.integers(0, MAX_SIZE + 1).filter(lambda v: v != n), label="other")
        other_root = MemoryTree([leaf_hash(x) for x in _leaves(other, salt)]).root()
        assert not verify_inclusion(leaf, i, other, proof, other_root)
    elif change == "drop" and proof:
        assert not verify_inclusion(leaf, i, n, proof[:-1], top)
    elif change == "extra":
        assert not verify_inclusion(leaf, i, n, [*proof, _flip(top, bit)], top)


@settings(deadline=None, max_examples=500)
@given(data=st.data(), n=sizes, salt=st.integers(0, 2**32 - 1))
def test_altered_consistency_proofs_fail(data: st.DataObject, n: int, salt: int) -> None:
    leaves = _leaves(n, salt)
    tree = MemoryTree([leaf_hash(x) for x in leaves])
    m = data.draw(st.integers(1, n), label="old size")
    proof, old_root, new_root = tree.consistency_proof(m, n), tree.root(m), tree.root(n)
    assert verify_consistency(m, n, old_root, new_root, proof)
    bit = data.draw(st.integers(0, 255), label="bit")
    change = data.draw(
        st.sampled_from(["old root", "new root", "proof", "old size", "new size", "drop", "extra"]),
        label="change",
    )
    if change == "old root":
        assert not verify_consistency(m, n, _flip(old_root, bit), new_root, proof)
    elif change == "new root":
        assert not verify_consistency(m, n, old_root, _flip(new_root, bit), proof)
    elif change == "proof" and proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="position")
        altered = [_flip(p, bit) if k == j else p for k, p in enumerate(proof)]
        assert not verify_consistency(m, n, old_root, new_root, altered)
    elif change == "old size":
        # Every tree extends the empty tree with an empty proof, so when the true proof is
        # empty (m == n), claiming size 0 is not an alteration: it is another true claim.
        others = [v for v in range(n + 1) if v != m and (v or proof)]
        if others:
            other = data.draw(st.sampled_from(others), label="other")
            assert not verify_consistency(other, n, tree.root(other), new_root, proof)
    elif change == "new size":
        other = data.draw(st.integers(m, MAX_SIZE + 1).filter(lambda v: v != n), label="other")
        other_root = MemoryTree([leaf_hash(x) for x in _leaves(other, salt)]).root()
        assert not verify_consistency(m, other, old_root, other_root, proof)
    elif change == "drop" and proof:
        assert not verify_consistency(m, n, old_root, new_root, proof[:-1])
    elif change == "extra":
        assert not verify_consistency(m, n, old_root, new_root, [*proof, _flip(new_root, bit)])


@settings(deadline=None, max_examples=200)
@given(data=st.data(), n=st.integers(2, 300), salt=st.integers(0, 2**32 - 1))
def test_a_rewritten_history_has_no_consistency_proof(
    data: st.DataObject, n: int, salt: int
) -> None:
    """Change one leaf below the old size: no proof from the true old root verifies."""
    leaves = _leaves(n, salt)
    m = data.draw(st.integers(1, n - 1), label="old size")
    victim = data.draw(st.integers(0, m - 1), label="rewritten leaf")
    honest = MemoryTree([leaf_hash(x) for x in leaves])
    forged_leaves = [x + b"!" if k == victim else x for k, x in enumerate(leaves)]
    forged = MemoryTree([leaf_hash(x) for x in forged_leaves])
    proof = forged.consistency_proof(m, n)
    assert verify_consistency(m, n, forged.root(m), forged.root(n), proof)
    assert not verify_consistency(m, n, honest.root(m), forged.root(n), proof)
