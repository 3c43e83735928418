"""The verifiable log's logic over a database connection: append, roots, proofs, checkpoints.

Nothing here commits: the ingest transaction, the request or the task that owns the unit of
work does. The hashing and proof rules are `reference_impl.integrity.merkle`'s; this module
only decides which stored subtrees to read and writes the new ones.

**Lag.** The tree is extended inside the ingest transaction that inserts the events, so an
event is in its tenant's tree the moment it is committed: the lag between the chain and the
tree is zero by construction. `auditkit_merkle_lag_events` measures it anyway, so a broken
invariant is seen rather than assumed.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from reference_impl.core.db import driver_connection
from reference_impl.core.errors import (
    IntegrityCompromisedError,
    NotFoundError,
    ProblemField,
    ValidationFailedError,
)
from reference_impl.core.settings import Settings, SettingsError
from reference_impl.core.state import StateDir
from reference_impl.events import repository as events_repository
from reference_impl.integrity.checkpoint import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign_checkpoint,
)
from reference_impl.integrity.merkle import (
    MemoryTree,
    SubtreeReader,
    consistency_proof,
    extend_frontier,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    reads_of,
    root,
    verify_consistency,
)
from reference_impl.transparency import repository
from reference_impl.transparency.repository import Frontier, StoredCheckpoint

__all__ = [
    "LOWEST_STORED_LEVEL",
    "CheckpointKeys",
    "ConsistencyProof",
    "InclusionProof",
    "IssuedCheckpoint",
    "TreeAudit",
    "TreeInconsistentError",
    "TreeWrites",
    "WitnessedComparison",
    "append_leaves",
    "audit_tree",
    "catch_up",
    "compare_with_witnessed",
    "consistency",
    "extend_trees",
    "inclusion",
    "inclusion_proofs",
    "issue_checkpoint",
    "origin_of",
    "plan_leaves",
    "root_at",
    "stored_subtrees",
]

T = TypeVar("T")


class TreeInconsistentError(IntegrityCompromisedError):
    """The stored tree no longer extends the tree the log last signed: history changed."""


# --8<-- [start:keys]
class CheckpointKeys:
    """The log's Ed25519 checkpoint keys by name; one of them signs new checkpoints.

    Older keys stay here after a rotation so that the service can still verify what they
    signed; their public halves stay published through `GET /v1/log/keys`.

    Args:
        seeds: 32-byte Ed25519 seeds by key name (the signed-note key name).
        active: The name of the key that signs new checkpoints.
    """

    def __init__(self, seeds: Mapping[str, bytes], active: str) -> None:
        if active not in seeds:
            raise SettingsError(
                "AUDIT_ACTIVE_CHECKPOINT_KEY must name one of AUDIT_CHECKPOINT_KEYS"
            )
        try:
            self._signers = {name: NoteSigner(name, seed) for name, seed in seeds.items()}
        except NoteError as exc:
            raise SettingsError(f"checkpoint key: {exc}") from None
        self.active = active

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointKeys:
        """The configured keys; in dev and test, the state directory's key when none is set.

        Raises:
            SettingsError: If no key is configured in a strict profile, or a key is invalid.
        """
        if settings.checkpoint_keys:
            assert settings.active_checkpoint_key is not None
            return cls(settings.checkpoint_seeds, settings.active_checkpoint_key)
        if settings.profile.is_strict:
            raise SettingsError("AUDIT_CHECKPOINT_KEYS is not set")
        name, seed_b64 = StateDir(settings.state_dir).dev_checkpoint_key()
        return cls({name: base64.b64decode(seed_b64)}, name)

    @property
    def signer(self) -> NoteSigner:
        """The key that signs new checkpoints."""
        return self._signers[self.active]

    @property
    def verifiers(self) -> list[NoteVerifier]:
        """The public halves of every configured key."""
        return [s.verifier for s in self._signers.values()]


# --8<-- [end:keys]


def origin_of(log_origin: str, tenant: str) -> str:
    """The checkpoint origin of a tenant's log: ``<log_origin>/<tenant>``."""
    return f"{log_origin.rstrip('/')}/{tenant}"


# --8<-- [start:stored-levels]
LOWEST_STORED_LEVEL = 4
"""Perfect subtrees below this level are not stored; proofs hash them from the events.

A subtree of level 4 covers 16 leaves. Storing every level would write two rows per event
into `merkle_nodes` (its leaf hash, and about one interior node per leaf), inside the ingest
transaction, while it holds the tenant's chain-head lock that every other writer of the
tenant waits for. From level 4 up it is one row per eight events. A proof that needs a lower
subtree reads the canonical bytes of the events under it instead, at most the 16 events of
each 16-leaf block the proof passes through (an inclusion proof passes through one block,
a consistency proof through at most two), and hashes them.
"""


def stored_subtrees(
    tenant: str, created: Iterable[tuple[int, int, bytes]]
) -> list[tuple[str, int, int, bytes]]:
    """The new perfect subtrees ``(level, index, hash)`` that are stored, as node rows."""
    return [(tenant, lv, i, h) for lv, i, h in created if lv >= LOWEST_STORED_LEVEL]


# --8<-- [end:stored-levels]


# --8<-- [start:append-leaves]
@dataclass(frozen=True)
class TreeWrites:
    """What extending the trees writes: new perfect subtrees and the moved frontiers.

    Attributes:
        nodes: ``(tenant, level, index, hash)`` of each subtree the new leaves complete,
            from `LOWEST_STORED_LEVEL` up.
        frontiers: The new frontier of each tenant whose tree grew.
    """

    nodes: list[tuple[str, int, int, bytes]]
    frontiers: dict[str, Frontier]


# Reads the stored ``(seq, canonical)`` of a tenant's events with ``start <= seq < end``.
LeafReader = Callable[[str, int, int], Awaitable[list[tuple[int, bytes]]]]


async def plan_leaves(
    conn: AsyncConnection, leaves: Sequence[tuple[str, int, bytes]]
) -> TreeWrites:
    """Compute how the events a transaction inserts extend their tenants' trees.

    Called inside that transaction with ``(tenant, seq, canonical)`` of each event it
    inserts; reads the frontiers, writes nothing (`extend_trees` does the work).
    """
    tenants = sorted({tenant for tenant, _, _ in leaves})
    frontiers = await repository.load_frontiers(conn, tenants) if tenants else {}
    return await extend_trees(leaves, frontiers, partial(repository.leaf_inputs, conn))


async def extend_trees(
    leaves: Iterable[tuple[str, int, bytes]],
    frontiers: Mapping[str, Frontier],
    read_leaves: LeafReader,
) -> TreeWrites:
    """Extend the tenants' trees from their ``frontiers`` with the events being inserted.

    The transaction holds each tenant's chain-head row lock (`SELECT ... FOR UPDATE`),
    which serialises every writer of a tenant across processes; the frontier row needs no
    lock of its own, and the tree can never disagree with a committed chain.

    Args:
        leaves: ``(tenant, seq, canonical)`` of each inserted event.
        frontiers: The tenants' frontiers, read in the same transaction (a tenant without
            one has an empty tree).
        read_leaves: Reads stored events the tree does not hold yet (only a database
            upgraded from before the verifiable log has any).

    Raises:
        IntegrityCompromisedError: If a tenant's tree is ahead of the events being added,
            which only a change to stored rows can cause.
    """
    by_tenant: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for tenant, seq, canonical in leaves:
        by_tenant[tenant].append((seq, canonical))
    if not by_tenant:
        return TreeWrites([], {})
    tenants = sorted(by_tenant)
    nodes: list[tuple[str, int, int, bytes]] = []
    updated: dict[str, Frontier] = {}
    for tenant in tenants:
        ordered = sorted(by_tenant[tenant])
        current = frontiers.get(tenant, Frontier(0, ()))
        first = ordered[0][0]
        if current.size > first:
            raise IntegrityCompromisedError(
                f"the Merkle tree of this tenant holds {current.size} leaves, but seq {first} "
                "is being added; stored rows were changed"
            )
        if current.size < first:
            # Events stored before the tree existed (or by an older version): add them
            # first, in order, so that leaf i is always seq i.
            ordered = await read_leaves(tenant, current.size, first) + ordered
        if [seq for seq, _ in ordered] != list(range(current.size, current.size + len(ordered))):
            raise IntegrityCompromisedError("the events to add to the Merkle tree are not gapless")
        size, frontier, created = extend_frontier(
            current.size, current.hashes, [leaf_hash(canonical) for _, canonical in ordered]
        )
        nodes.extend(stored_subtrees(tenant, created))
        updated[tenant] = Frontier(size, tuple(frontier))
    return TreeWrites(nodes, updated)


async def append_leaves(conn: AsyncConnection, leaves: Sequence[tuple[str, int, bytes]]) -> None:
    """Extend the trees with already inserted events and write the result (`plan_leaves`)."""
    writes = await plan_leaves(conn, leaves)
    await repository.insert_nodes(conn, writes.nodes)
    await repository.save_frontiers(conn, writes.frontiers)


# --8<-- [end:append-leaves]


CATCH_UP_CHUNK = 10_000


async def catch_up(conn: AsyncConnection, tenant: str) -> int:
    """Add stored events that are not in the tree yet; returns how many were added.

    Only events stored before the tree existed (a database upgraded to the verifiable log)
    are ever missing: ingest extends the tree in its own transaction. The tenant's chain
    head is locked first, as ingest locks it, so the two never extend the tree at once.
    """
    head = await events_repository.chain_head(conn, tenant)
    if head is None or head.next_seq <= await repository.tree_size(conn, tenant):
        return 0
    locked = (await events_repository.lock_heads(await driver_connection(conn), [tenant]))[tenant]
    added = 0
    while (size := await repository.tree_size(conn, tenant)) < locked.next_seq:
        end = min(locked.next_seq, size + CATCH_UP_CHUNK)
        rows = await repository.leaf_inputs(conn, tenant, size, end)
        if [seq for seq, _ in rows] != list(range(size, end)):
            raise IntegrityCompromisedError(
                f"the stored events of this tenant are not gapless between seq {size} and {end}"
            )
        await append_leaves(conn, [(tenant, seq, c) for seq, c in rows])
        added += len(rows)
    return added


async def _reader(conn: AsyncConnection, tenant: str, compute: Callable[[SubtreeReader], T]) -> T:
    """Run a tree computation over the subtrees it needs: stored ones in one query, those
    below `LOWEST_STORED_LEVEL` hashed from their events (read in one more)."""
    wanted = reads_of(compute)
    above = [w for w in wanted if w[0] >= LOWEST_STORED_LEVEL]
    below = [w for w in wanted if w[0] < LOWEST_STORED_LEVEL]
    stored = await repository.read_nodes(conn, tenant, above)
    missing = [w for w in above if w not in stored]
    if missing:
        level, index = missing[0]
        raise IntegrityCompromisedError(
            f"the Merkle tree of this tenant lacks the stored subtree at level {level}, "
            f"index {index}; stored rows were removed"
        )
    stored.update(await _hashed_from_events(conn, tenant, below))
    return compute(lambda level, index: stored[(level, index)])


async def _hashed_from_events(
    conn: AsyncConnection, tenant: str, subtrees: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The hashes of low perfect subtrees, from the canonical bytes of the events they cover."""
    seqs = sorted({seq for lv, i in subtrees for seq in range(i << lv, (i + 1) << lv)})
    canonical = await repository.leaves_at(conn, tenant, seqs)
    if len(canonical) != len(seqs):
        gone = min(set(seqs) - set(canonical))
        raise IntegrityCompromisedError(
            f"the event at seq {gone}, a leaf of this tenant's Merkle tree, is missing; "
            "stored rows were removed"
        )
    leaves = {seq: leaf_hash(data) for seq, data in canonical.items()}
    return {
        (level, index): MemoryTree(
            [leaves[seq] for seq in range(index << level, (index + 1) << level)]
        ).subtree(level, 0)
        for level, index in subtrees
    }


async def root_at(conn: AsyncConnection, tenant: str, size: int) -> bytes:
    """The root hash of ``tenant``'s tree at ``size`` leaves, from O(log n) stored rows."""
    return await _reader(conn, tenant, lambda read: root(read, size))


def _b64(values: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """An RFC 9162 inclusion proof of one event."""

    event_id: str
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    proof: list[bytes]

    def as_dict(self) -> dict[str, Any]:
        """The API shape: base64 hashes."""
        return {
            "event_id": self.event_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": base64.b64encode(self.leaf_hash).decode(),
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "proof": _b64(self.proof),
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """An RFC 9162 consistency proof between two sizes of one tree."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]

    def as_dict(self) -> dict[str, Any]:
        """The API shape: base64 hashes."""
        return {
            "from": self.first,
            "to": self.second,
            "from_root": base64.b64encode(self.first_root).decode(),
            "to_root": base64.b64encode(self.second_root).decode(),
            "proof": _b64(self.proof),
        }


def _bad(parameter: str, detail: str) -> ValidationFailedError:
    return ValidationFailedError([ProblemField(detail, parameter=parameter)])


async def _default_size(conn: AsyncConnection, tenant: str) -> int:
    latest = await repository.latest_checkpoint(conn, tenant)
    if latest is None:
        raise NotFoundError("no checkpoint yet: name a tree_size, or issue a checkpoint first")
    return latest.tree_size


# --8<-- [start:inclusion]
async def inclusion(
    conn: AsyncConnection, tenant: str, event_id: UUID, tree_size: int | None
) -> InclusionProof:
    """The inclusion proof of an event in ``tenant``'s tree at ``tree_size``.

    Args:
        conn: A connection scoped to the tenant.
        tenant: The caller's tenant.
        event_id: The event.
        tree_size: The tree size; by default the latest checkpoint's, so that the proof
            checks against a signed root.

    Raises:
        NotFoundError: The tenant has no such event (or no checkpoint, without a size).
        ValidationFailedError: The size is beyond the tree, or the event is not in the
            tree at that size (parameter `tree_size`).
    """
    seq = await repository.event_seq(conn, tenant, event_id)
    if seq is None:
        raise NotFoundError(f"no event {event_id} in this tenant")
    size = tree_size if tree_size is not None else await _default_size(conn, tenant)
    current = await repository.tree_size(conn, tenant)
    if size > current:
        raise _bad("tree_size", f"the tree holds {current} leaves; tree_size {size} is beyond it")
    if seq >= size:
        raise _bad(
            "tree_size",
            f"the event is leaf {seq}, so it is only in trees of size {seq + 1} or more",
        )
    proof, root_hash, leaf = await _reader(
        conn,
        tenant,
        lambda read: (inclusion_proof(read, seq, size), root(read, size), read(0, seq)),
    )
    return InclusionProof(str(event_id), seq, size, leaf, root_hash, proof)


# --8<-- [end:inclusion]


async def consistency(
    conn: AsyncConnection, tenant: str, first: int, second: int
) -> ConsistencyProof:
    """The consistency proof between sizes ``first`` and ``second`` of ``tenant``'s tree.

    Raises:
        ValidationFailedError: If ``0 <= first <= second <= tree size`` does not hold
            (parameters `from` and `to`).
    """
    current = await repository.tree_size(conn, tenant)
    if second > current:
        raise _bad("to", f"the tree holds {current} leaves; to={second} is beyond it")
    if first > second:
        raise _bad("from", f"from={first} is larger than to={second}")
    proof, first_root, second_root = await _reader(
        conn,
        tenant,
        lambda read: (
            consistency_proof(read, first, second),
            root(read, first),
            root(read, second),
        ),
    )
    return ConsistencyProof(first, second, first_root, second_root, proof)


@dataclass(frozen=True, slots=True)
class IssuedCheckpoint:
    """The outcome of issuing a checkpoint."""

    checkpoint: StoredCheckpoint
    created: bool
    """False when the tree had not grown since the latest checkpoint (that one is returned)."""


def _signed_root(stored: StoredCheckpoint, keys: CheckpointKeys) -> bytes:
    """The root a stored checkpoint's note commits to, checked against its signature.

    A stored checkpoint signed by a configured key must verify; one signed by a key that
    is no longer configured is read unverified (its root still has to match the column).
    """
    verifiers = [v for v in keys.verifiers if v.name == stored.key_name]
    try:
        text = open_note(stored.note, verifiers).text if verifiers else _unverified(stored.note)
        body = Checkpoint.parse(text)
    except NoteError as exc:
        raise TreeInconsistentError(
            f"the stored checkpoint at size {stored.tree_size} does not verify: {exc}"
        ) from None
    if body.size != stored.tree_size or body.root_hash != stored.root_hash:
        raise TreeInconsistentError(
            f"the stored checkpoint at size {stored.tree_size} disagrees with its own note"
        )
    return body.root_hash


def _unverified(note: str) -> str:
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    return note[: split + 1]


# --8<-- [start:issue-checkpoint]
async def issue_checkpoint(
    conn: AsyncConnection, tenant: str, keys: CheckpointKeys, log_origin: str
) -> IssuedCheckpoint:
    """Sign and store a checkpoint of ``tenant``'s tree as it is now.

    Before signing, the log checks its own history: the tree must still extend the tree of
    the latest checkpoint it signed (same root at that size, and a consistency proof that
    verifies). A log must never sign two checkpoints that are inconsistent with each other.

    Args:
        conn: A transaction scoped to the tenant.
        tenant: The tenant.
        keys: The checkpoint keys; the active one signs.
        log_origin: The origin prefix (`Settings.log_origin`).

    Raises:
        IntegrityCompromisedError: The tenant's log is marked compromised: no checkpoint is
            built over a broken range until it is cleared.
        TreeInconsistentError: The stored tree no longer extends the last checkpoint.
    """
    if await events_repository.compromised(conn, tenant):
        raise IntegrityCompromisedError(
            "this tenant's log is marked compromised; no checkpoint is issued until it is "
            "investigated and cleared"
        )
    await catch_up(conn, tenant)
    size = await repository.tree_size(conn, tenant)
    latest = await repository.latest_checkpoint(conn, tenant)
    if latest is not None and latest.tree_size > size:
        raise TreeInconsistentError(
            f"the tree holds {size} leaves, fewer than the {latest.tree_size} already signed"
        )
    frontier = (await repository.load_frontiers(conn, [tenant])).get(tenant, Frontier(0, ()))
    old_size = 0 if latest is None else latest.tree_size
    root_hash, old_root, proof = await _reader(
        conn,
        tenant,
        lambda read: (
            root(read, size),
            root(read, old_size),
            consistency_proof(read, old_size, size),
        ),
    )
    if frontier.size != size or frontier_root(frontier.hashes) != root_hash:
        raise TreeInconsistentError("the tree's stored nodes disagree with its frontier")
    if latest is not None:
        signed_root = _signed_root(latest, keys)
        if old_root != signed_root or not verify_consistency(
            latest.tree_size, size, signed_root, root_hash, proof
        ):
            raise TreeInconsistentError(
                f"the tree no longer extends the checkpoint signed at size {latest.tree_size}"
            )
        if latest.tree_size == size:
            return IssuedCheckpoint(latest, created=False)
    signer = keys.signer
    stored_key = await repository.register_key(
        conn, signer.name, signer.verifier.public_key, signer.verifier.vkey
    )
    if stored_key.public_key != signer.verifier.public_key:
        raise SettingsError(
            f"checkpoint key name {signer.name!r} was used before with another key; "
            "give a new key a new name"
        )
    checkpoint = Checkpoint(origin_of(log_origin, tenant), size, root_hash)
    note = sign_checkpoint(checkpoint, signer)
    stored = await repository.insert_checkpoint(conn, tenant, size, root_hash, note, signer.name)
    if stored is None:
        # Another replica signed this size a moment ago; its checkpoint is the one.
        existing = await repository.checkpoint_at(conn, tenant, size)
        assert existing is not None
        return IssuedCheckpoint(existing, created=False)
    return IssuedCheckpoint(stored, created=True)


# --8<-- [end:issue-checkpoint]


async def inclusion_proofs(
    conn: AsyncConnection, tenant: str, seqs: Sequence[int], size: int
) -> dict[int, list[bytes]]:
    """Inclusion proofs of many leaves at one tree size, from one query.

    Neighbouring leaves share most of their paths, so a run of consecutive seqs costs
    about two stored rows per leaf rather than log n.
    """

    def prove(read: SubtreeReader) -> dict[int, list[bytes]]:
        return {seq: inclusion_proof(read, seq, size) for seq in seqs}

    return await _reader(conn, tenant, prove)


@dataclass(slots=True)
class TreeAudit:
    """What a full audit of a stored tree found."""

    tenant: str
    leaves: int = 0
    nodes: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the stored tree is exactly the tree of the stored events."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "leaves": self.leaves,
            "nodes": self.nodes,
            "checkpoints": self.checkpoints,
            "problems": self.problems,
        }


AUDIT_CHUNK = 4096
MAX_PROBLEMS = 20


# --8<-- [start:audit-tree]
async def audit_tree(
    conn: AsyncConnection,
    tenant: str,
    verifiers: Sequence[NoteVerifier],
    *,
    progress: Callable[[int], None] | None = None,
) -> TreeAudit:
    """Rebuild ``tenant``'s tree from the stored canonical bytes and compare everything.

    Every stored node, the frontier and the root of every stored checkpoint are checked
    against the tree recomputed from the events, and every checkpoint's signature against
    ``verifiers``. Memory stays bounded: nodes are compared a chunk of leaves at a time.

    Args:
        conn: A connection scoped to the tenant (a REPEATABLE READ snapshot is best).
        tenant: The tenant.
        verifiers: The checkpoint keys to check signatures with.
        progress: Called with the number of leaves read so far.

    Returns:
        The findings; ``ok`` when the stored tree is the tree of the stored events.
    """
    audit = TreeAudit(tenant)
    checkpoints = sorted(
        await repository.list_checkpoints(conn, tenant, limit=1_000_000),
        key=lambda c: c.tree_size,
    )
    pending: dict[tuple[int, int], bytes] = {}
    size, next_cp = 0, 0
    frontier_hashes: list[bytes] = []

    def problem(text: str) -> None:
        if len(audit.problems) < MAX_PROBLEMS:
            audit.problems.append(text)

    async def flush() -> None:
        stored = await repository.read_nodes(conn, tenant, list(pending))
        for key, expected in pending.items():
            audit.nodes += 1
            found = stored.get(key)
            if found != expected:
                what = "missing" if found is None else "differs from the events"
                problem(f"stored node at level {key[0]}, index {key[1]} {what}")
        pending.clear()

    def check_checkpoints() -> None:
        nonlocal next_cp
        while next_cp < len(checkpoints) and checkpoints[next_cp].tree_size == size:
            _check_checkpoint(checkpoints[next_cp], frontier_root(frontier_hashes))
            next_cp += 1

    def _check_checkpoint(cp: StoredCheckpoint, expected: bytes) -> None:
        audit.checkpoints += 1
        try:
            body = Checkpoint.parse(open_note(cp.note, verifiers).text)
        except NoteError as exc:
            problem(f"checkpoint at size {cp.tree_size} does not verify: {exc}")
            return
        if body.root_hash != expected or cp.root_hash != expected:
            problem(
                f"checkpoint at size {cp.tree_size} signs a root that is not the root of the "
                "stored events at that size"
            )

    check_checkpoints()
    async for seq, canonical in repository.stream_leaves(conn, tenant):
        if seq != size:
            problem(f"the stored events are not gapless at seq {size} (found seq {seq})")
            break
        size, frontier_hashes, created = extend_frontier(
            size, frontier_hashes, [leaf_hash(canonical)]
        )
        pending.update({(lv, i): h for _, lv, i, h in stored_subtrees(tenant, created)})
        check_checkpoints()
        if len(pending) >= AUDIT_CHUNK:
            await flush()
        if progress is not None and size % AUDIT_CHUNK == 0:
            progress(size)
    await flush()
    audit.leaves = size
    stored_frontier = (await repository.load_frontiers(conn, [tenant])).get(tenant)
    if stored_frontier is None and size:
        problem("the tree has no stored frontier")
    elif stored_frontier is not None and (
        stored_frontier.size != size or list(stored_frontier.hashes) != frontier_hashes
    ):
        problem(
            f"the stored frontier (size {stored_frontier.size}) is not the frontier of the "
            f"{size} stored events"
        )
    for cp in checkpoints[next_cp:]:
        problem(f"checkpoint at size {cp.tree_size} is beyond the {size} stored events")
    if progress is not None:
        progress(size)
    return audit


# --8<-- [end:audit-tree]


@dataclass(frozen=True, slots=True)
class WitnessedComparison:
    """A checkpoint someone else holds, against what the database holds now."""

    size: int
    witnessed_root: bytes
    events_root: bytes | None
    """Root of the stored events' canonical bytes at `size` (None: fewer events stored)."""
    tree_root: bytes | None
    """Root from the stored Merkle nodes at `size` (None: the tree is smaller)."""

    @property
    def consistent(self) -> bool:
        """Whether the stored events and the stored tree both give the witnessed root."""
        return self.events_root == self.witnessed_root == self.tree_root


# --8<-- [start:compare-witnessed]
async def compare_with_witnessed(
    conn: AsyncConnection, tenant: str, checkpoint: Checkpoint
) -> WitnessedComparison:
    """Recompute the root a witness holds from the stored events and from the stored tree.

    A witness keeps only the last checkpoint it accepted. If the events stored now do not
    hash to its root at its size, the log's history changed after the witness saw it: the
    proof of a rewrite that no database superuser can undo. The stored tree is compared
    too, to tell whether the attacker also rebuilt the Merkle nodes.
    """
    size = checkpoint.size
    leaves: list[bytes] = []
    async for seq, canonical in repository.stream_leaves(conn, tenant):
        if seq >= size:
            break
        if seq != len(leaves):
            break
        leaves.append(leaf_hash(canonical))
    events_root = None
    if len(leaves) == size:
        _, frontier, _ = extend_frontier(0, [], leaves)
        events_root = frontier_root(frontier)
    tree_root = None
    if await repository.tree_size(conn, tenant) >= size:
        try:
            tree_root = await root_at(conn, tenant, size)
        except IntegrityCompromisedError:
            tree_root = None
    return WitnessedComparison(size, checkpoint.root_hash, events_root, tree_root)


# --8<-- [end:compare-witnessed]
