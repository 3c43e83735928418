"""The RFC 9162 (Certificate Transparency v2) Merkle tree: hashes, roots, proofs.

A tenant's log is a Merkle tree whose leaf ``i`` is the event with ``seq == i``:

* leaf hash ``= SHA-256(0x00 ‖ canonical_bytes)``
* interior node ``= SHA-256(0x01 ‖ left ‖ right)``
* the root of ``n`` leaves splits them at ``k``, the largest power of two below ``n``
  (RFC 9162 §2.1.1), so every size has a root, and the empty tree's root is
  ``SHA-256("")``.

The prefixes keep a leaf from ever hashing like a node (second-preimage resistance).

**Storage model.** Proof generation reads *perfect subtrees* only: the subtree at
``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)``. A store that can
give every perfect subtree hash (level 0 being the leaves) answers any root or proof for
any tree size with O(log n) reads, because every hash a proof needs is either a perfect
subtree or the right edge of one, which is the fold of at most log n perfect subtrees. (The
service stores them from level 4 up and hashes the lower ones from the leaves they cover:
`transparency.service.LOWEST_STORED_LEVEL`.) Appending
needs only the *frontier*: the roots of the perfect subtrees that make up the current size,
largest first ([`extend_frontier`][reference_impl.integrity.merkle.extend_frontier]).

**Proofs** follow RFC 9162 §2.1.3 (inclusion) and §2.1.4 (consistency): ordered lists of
hashes, leaf side first. Verification is the RFC's own algorithm, so the proofs check out
with any independent RFC 6962/9162 verifier and vice versa.

Example:
    ```python
    from reference_impl.integrity.merkle import (
        MemoryTree, leaf_hash, verify_consistency, verify_inclusion,
    )

    tree = MemoryTree([leaf_hash(bytes([i])) for i in range(7)])
    proof = tree.inclusion_proof(3, 7)
    assert verify_inclusion(leaf_hash(bytes([3])), 3, 7, proof, tree.root(7))
    assert verify_consistency(4, 7, tree.root(4), tree.root(7), tree.consistency_proof(4, 7))
    ```
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "MemoryTree",
    "Subtree",
    "SubtreeReader",
    "consistency_proof",
    "extend_frontier",
    "frontier_root",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "reads_of",
    "root",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Length in bytes of every tree hash (SHA-256)."""

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root hash of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

Subtree = tuple[int, int]
"""A perfect subtree as ``(level, index)``: leaves ``[index·2^level, (index+1)·2^level)``."""

SubtreeReader = Callable[[int, int], bytes]
"""Returns the hash of the perfect subtree at ``(level, index)``; level 0 are leaf hashes."""

T = TypeVar("T")


# --8<-- [start:hashes]
def leaf_hash(data: bytes) -> bytes:
    """Hash a leaf: ``SHA-256(0x00 ‖ data)``.

    Args:
        data: The leaf's bytes; for an audit event, its stored canonical bytes.

    Returns:
        The 32-byte leaf hash.
    """
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an interior node: ``SHA-256(0x01 ‖ left ‖ right)``.

    Args:
        left: Hash of the left child.
        right: Hash of the right child.

    Returns:
        The 32-byte node hash.
    """
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


# --8<-- [end:hashes]


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``k`` with ``k < n <= 2k``).

    Args:
        n: A tree size of at least 2.

    Returns:
        Where RFC 9162 splits ``n`` leaves into a left and a right subtree.

    Raises:
        ValueError: If ``n < 2``.
    """
    if n < 2:
        raise ValueError(f"only trees of two or more leaves split, not {n}")
    return 1 << ((n - 1).bit_length() - 1)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def _range_hash(read: SubtreeReader, start: int, size: int) -> bytes:
    """MTH of ``size`` leaves from ``start``, where ``start`` is aligned for the range.

    Every range a proof or a root needs starts at a multiple of the largest power of two
    not above its size, so it is one perfect subtree or the fold of several: one read per
    set bit of ``size``.
    """
    if _is_power_of_two(size):
        level = size.bit_length() - 1
        return read(level, start >> level)
    k = split_point(size)
    return node_hash(read(k.bit_length() - 1, start // k), _range_hash(read, start + k, size - k))


def root(read: SubtreeReader, size: int) -> bytes:
    """The root hash of the first ``size`` leaves.

    Args:
        read: Reads perfect subtree hashes.
        size: The tree size; 0 gives ``EMPTY_ROOT``.

    Returns:
        The 32-byte root hash, from at most ``log2(size) + 1`` reads.
    """
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(read, 0, size)


# --8<-- [start:inclusion-proof]
def inclusion_proof(read: SubtreeReader, index: int, size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1).

    Args:
        read: Reads perfect subtree hashes.
        index: The leaf, ``0 <= index < size``.
        size: The tree size.

    Returns:
        The sibling hashes from the leaf up to the root.

    Raises:
        ValueError: If ``index`` is not a leaf of that tree.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, n, m = 0, size, index
    # PATH(m, D[n]) recurses into the half holding m and appends the other half's hash;
    # walking down and reversing gives the same leaf-first order without recursion.
    while n > 1:
        k = split_point(n)
        if m < k:
            path.append(_range_hash(read, start + k, n - k))
            n = k
        else:
            path.append(_range_hash(read, start, k))
            start, n, m = start + k, n - k, m - k
    path.reverse()
    return path


# --8<-- [end:inclusion-proof]


# --8<-- [start:consistency-proof]
def consistency_proof(read: SubtreeReader, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of ``new_size`` leaves.

    RFC 9162 §2.1.4.1 ``PROOF(m, D[n])``. For ``old_size`` 0 or equal to ``new_size`` the
    proof is empty: every tree extends the empty tree, and a tree extends itself.

    Args:
        read: Reads perfect subtree hashes.
        old_size: The earlier size ``m``.
        new_size: The later size ``n``, ``m <= n``.

    Returns:
        The proof hashes, in the RFC's order.

    Raises:
        ValueError: If ``old_size > new_size``.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(f"old size {old_size} is larger than new size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, n, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[n], b) walks down one side per step and appends the other side; the
    # walk ends at the subtree equal to the old tree's last piece, which is added unless
    # it is the whole old tree (b still true), since the verifier holds that root.
    while m != n:
        k = split_point(n)
        if m <= k:
            proof.append(_range_hash(read, start + k, n - k))
            n = k
        else:
            proof.append(_range_hash(read, start, k))
            start, n, m, complete = start + k, n - k, m - k, False
    if not complete:
        proof.append(_range_hash(read, start, n))
    proof.reverse()
    return proof


# --8<-- [end:consistency-proof]


# --8<-- [start:verify-inclusion]
def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Check an inclusion proof exactly as RFC 9162 §2.1.3.2 says.

    Args:
        leaf: The leaf hash (``leaf_hash`` of the entry), not the entry itself.
        index: The leaf's index.
        size: The tree size the proof is for.
        proof: The audit path, leaf side first.
        root_hash: The trusted root of the tree of ``size`` leaves.

    Returns:
        True only if the path leads from ``leaf`` at ``index`` to ``root_hash``.
    """
    if not _sizes_ok(index, size) or index >= size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


# --8<-- [end:verify-inclusion]


# --8<-- [start:verify-consistency]
def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """Check a consistency proof exactly as RFC 9162 §2.1.4.2 says.

    The RFC covers ``0 < old_size < new_size``. At the edges: equal sizes need an empty
    proof and equal roots; an old size of 0 needs an empty proof and the empty root.

    Args:
        old_size: The earlier tree size.
        new_size: The later tree size.
        old_root: The trusted root at ``old_size``.
        new_root: The root at ``new_size`` being checked.
        proof: The consistency proof.

    Returns:
        True only if the tree of ``new_size`` leaves extends the tree of ``old_size``.
    """
    if not _sizes_ok(old_size, new_size) or old_size > new_size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if not path:
        return False
    if _is_power_of_two(old_size):
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# --8<-- [end:verify-consistency]


def _sizes_ok(*values: int) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


# --8<-- [start:frontier]
def extend_frontier(
    size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]
) -> tuple[int, list[bytes], list[tuple[int, int, bytes]]]:
    """Append leaf hashes to a tree known only by its size and frontier.

    The frontier is the list of roots of the perfect subtrees that make up ``size`` leaves,
    largest (leftmost) first: one per set bit of ``size``. Appending a leaf adds it as a
    subtree of level 0 and merges equal-level subtrees from the right, like carrying in a
    binary counter, so no stored node is ever read.

    Args:
        size: The current tree size.
        frontier: The current frontier (``popcount(size)`` hashes).
        leaves: Leaf hashes to append, in index order.

    Returns:
        The new size, the new frontier, and every new perfect subtree as
        ``(level, index, hash)``, leaves included.

    Raises:
        ValueError: If the frontier does not fit ``size``.
    """
    _check_size("size", size)
    if len(frontier) != size.bit_count():
        raise ValueError(f"a tree of size {size} has {size.bit_count()} frontier hashes")
    stack = list(frontier)
    created: list[tuple[int, int, bytes]] = []
    for h in leaves:
        created.append((0, size, h))
        level = 0
        # Each set low bit of the old size is a full subtree waiting for a right sibling.
        while size >> level & 1:
            h = node_hash(stack.pop(), h)
            level += 1
            created.append((level, size >> level, h))
        stack.append(h)
        size += 1
    return size, stack, created


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The root of a tree from its frontier (``EMPTY_ROOT`` for no frontier).

    Args:
        frontier: Perfect subtree roots, largest first.

    Returns:
        The root hash: the frontier folded from the right.
    """
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = node_hash(h, acc)
    return acc


# --8<-- [end:frontier]


def reads_of(compute: Callable[[SubtreeReader], T]) -> list[Subtree]:
    """The perfect subtrees a computation reads, in first-read order.

    Which subtrees a root or a proof needs depends only on sizes and indexes, never on hash
    values, so running the computation once over placeholder hashes names them all. A
    database store fetches them in one query, then runs the computation for real.

    Args:
        compute: A function of a reader, e.g. ``lambda r: inclusion_proof(r, 5, 9)``.

    Returns:
        The distinct ``(level, index)`` pairs read.
    """
    seen: dict[Subtree, None] = {}

    def record(level: int, index: int) -> bytes:
        seen.setdefault((level, index))
        return bytes(HASH_SIZE)

    compute(record)
    return list(seen)


class MemoryTree:
    """Every perfect subtree of a list of leaf hashes, kept in memory.

    Used by tests, by the offline verifier and to rebuild a stored tree from canonical
    bytes. Building costs O(n) hashes; any root or proof after that costs O(log n).

    Args:
        leaves: Leaf hashes in index order.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [list(leaves)]
        level = 0
        while len(self._levels[level]) > 1:
            below = self._levels[level]
            self._levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )
            level += 1

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def subtree(self, level: int, index: int) -> bytes:
        """The perfect subtree hash at ``(level, index)``; a ``SubtreeReader``.

        Raises:
            KeyError: If no such complete subtree exists in this tree.
        """
        try:
            if level < 0 or index < 0:
                raise IndexError
            return self._levels[level][index]
        except IndexError:
            raise KeyError((level, index)) from None

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash and every perfect subtree it completes."""
        self._levels[0].append(leaf)
        level, index = 0, len(self._levels[0]) - 1
        while index & 1:
            below = self._levels[level]
            h = node_hash(below[index - 1], below[index])
            level, index = level + 1, index >> 1
            if len(self._levels) == level:
                self._levels.append([])
            self._levels[level].append(h)

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first ``size`` leaves (all by default)."""
        return root(self.subtree, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size`` leaves (all by default)."""
        return inclusion_proof(self.subtree, index, self.size if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` leaves (all by default)."""
        return consistency_proof(
            self.subtree, old_size, self.size if new_size is None else new_size
        )
