"""Known answers for the RFC 9162 tree: the empty root and the eight-leaf reference tree.

The reference tree is the one Certificate Transparency implementations share in their test
suites; its roots and proofs are published facts, written out here as hex.
"""

from __future__ import annotations

import hashlib

import pytest

from reference_impl.integrity.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_proof,
    extend_frontier,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    node_hash,
    reads_of,
    root,
    split_point,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]

# Root of the first n leaves, n = 1..8.
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

CONSISTENCY = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}

TREE = MemoryTree([leaf_hash(x) for x in LEAVES])


def _hex(values: list[bytes]) -> list[str]:
    return [v.hex() for v in values]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MemoryTree().root() == EMPTY_ROOT
    assert frontier_root([]) == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    # A node's hash input is never a leaf's: the first byte differs.
    assert leaf_hash(b"\x01" + b"a" * 64) != node_hash(b"a" * 32, b"a" * 32)


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    assert TREE.root(size).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size"), sorted(INCLUSION))
def test_reference_inclusion_proofs(index: int, size: int) -> None:
    proof = TREE.inclusion_proof(index, size)
    assert _hex(proof) == INCLUSION[(index, size)]
    assert verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, bytes.fromhex(ROOTS[7]))


@pytest.mark.parametrize(("old", "new"), sorted(CONSISTENCY))
def test_reference_consistency_proofs(old: int, new: int) -> None:
    proof = TREE.consistency_proof(old, new)
    assert _hex(proof) == CONSISTENCY[(old, new)]
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert verify_consistency(old, new, old_root, new_root, proof)


def test_split_point() -> None:
    assert [split_point(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]
    with pytest.raises(ValueError, match="two or more"):
        split_point(1)


def test_edges_of_verification() -> None:
    r8 = bytes.fromhex(ROOTS[7])
    leaf = leaf_hash(LEAVES[0])
    proof = TREE.inclusion_proof(0, 8)
    assert not verify_inclusion(leaf, 8, 8, proof, r8)  # index outside the tree
    assert not verify_inclusion(leaf, 0, 8, [*proof, proof[0]], r8)  # one hash too many
    assert not verify_inclusion(leaf, 0, 8, proof[:-1], r8)  # one too few
    assert not verify_inclusion(leaf, 0, 8, [p[:31] for p in proof], r8)  # short hashes
    assert not verify_inclusion(leaf, -1, 8, proof, r8)
    assert verify_inclusion(leaf, 0, 1, [], leaf)  # a one-leaf tree is its leaf
    # A proof must use up the whole path: the root presented as a leaf, or a subtree root
    # with the rest of the path cut off, proves nothing about a larger tree.
    assert not verify_inclusion(r8, 0, 8, [], r8)
    assert not verify_inclusion(TREE.subtree(1, 0), 0, 8, proof[1:], r8)
    assert not verify_consistency(4, 8, TREE.root(4), r8, [r8])
    # A root of 8 leaves presented as the root of 9: the path is one level too short.
    assert not verify_inclusion(leaf, 0, 9, proof, r8)
    assert not verify_consistency(4, 9, TREE.root(4), r8, TREE.consistency_proof(4, 8))
    assert verify_consistency(0, 8, EMPTY_ROOT, r8, [])
    assert not verify_consistency(0, 8, r8, r8, [])  # the empty tree has only one root
    assert not verify_consistency(8, 8, r8, r8, [r8])  # equal sizes need an empty proof
    assert not verify_consistency(8, 8, r8, EMPTY_ROOT, [])
    assert not verify_consistency(9, 8, r8, r8, [])
    assert not verify_consistency(3, 8, TREE.root(3), r8, [])  # a real change needs a proof


def test_proof_generation_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree of size 8"):
        TREE.inclusion_proof(8, 8)
    with pytest.raises(ValueError, match="larger than new size"):
        TREE.consistency_proof(5, 4)
    with pytest.raises(TypeError):
        root(TREE.subtree, True)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        TREE.subtree(3, 1)  # the tree has no second perfect subtree of 8 leaves


def test_frontier_appends_without_reading_nodes() -> None:
    size, frontier, created = extend_frontier(0, [], [leaf_hash(x) for x in LEAVES[:5]])
    assert size == 5
    assert frontier == [TREE.subtree(2, 0), TREE.subtree(0, 4)]
    assert frontier_root(frontier).hex() == ROOTS[4]
    size, frontier, more = extend_frontier(size, frontier, [leaf_hash(x) for x in LEAVES[5:]])
    assert (size, frontier) == (8, [TREE.subtree(3, 0)])
    every = {(level, index): h for level, index, h in [*created, *more]}
    assert len(every) == 8 + 4 + 2 + 1
    assert all(TREE.subtree(level, index) == h for (level, index), h in every.items())
    with pytest.raises(ValueError, match="frontier hashes"):
        extend_frontier(5, [], [])


def test_reads_are_logarithmic() -> None:
    """A root or a proof of any size reads O(log n) stored subtrees, whatever n is."""
    n = 1_000_003
    assert len(reads_of(lambda r: root(r, n))) == n.bit_count()
    assert len(reads_of(lambda r: inclusion_proof(r, 123_456, n))) <= 2 * n.bit_length()
    assert len(reads_of(lambda r: consistency_proof(r, 654_321, n))) <= 2 * n.bit_length()
