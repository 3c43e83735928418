"""Tables of the verifiable log.

* `merkle_nodes` holds the perfect subtree hashes of every tenant's tree from level 4 up
  (`transparency.service.LOWEST_STORED_LEVEL`; leaf ``i`` is the event with ``seq == i``):
  level ``l`` index ``j`` covers leaves ``[j·2^l, (j+1)·2^l)``. Any root or proof for any
  size is O(log n) of these rows, plus at most 16 events per 16-leaf block it passes
  through, whose lower subtrees are hashed from their canonical bytes.
* `merkle_frontiers` holds, per tenant, the tree size and the roots of the perfect subtrees
  along the right edge, so appending needs no read of `merkle_nodes`.
* `checkpoints` keeps every signed checkpoint; `checkpoint_keys` every public key that ever
  signed one, so checkpoints signed before a rotation stay verifiable.
* `witness_states` is what each witness last accepted for a tenant, so the next
  publication sends the right consistency proof.

Nodes, checkpoints and keys are append-only (triggers refuse UPDATE and DELETE), and the
tenant tables are under the same row-level security as the events.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.orm import Mapped, mapped_column

from reference_impl.core.db import Base

__all__ = ["CheckpointKeyRow", "CheckpointRow", "MerkleFrontier", "MerkleNode", "WitnessState"]

TZ = TIMESTAMP(timezone=True)


class MerkleNode(Base):
    """One perfect subtree hash of a tenant's tree (write-once)."""

    __tablename__ = "merkle_nodes"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class MerkleFrontier(Base):
    """A tenant's tree size and the right-edge subtree roots, largest first."""

    __tablename__ = "merkle_frontiers"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[list[bytes]] = mapped_column(ARRAY(LargeBinary))
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=text("now()"))


class CheckpointRow(Base):
    """A signed checkpoint of a tenant's log (write-once; every one is kept)."""

    __tablename__ = "checkpoints"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    key_name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=text("now()"))


class CheckpointKeyRow(Base):
    """A checkpoint signing key's public half, recorded when first used."""

    __tablename__ = "checkpoint_keys"

    key_name: Mapped[str] = mapped_column(Text, primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    vkey: Mapped[str] = mapped_column(Text, unique=True)
    first_used_at: Mapped[datetime] = mapped_column(TZ, server_default=text("now()"))


class WitnessState(Base):
    """What one witness last accepted for one tenant, and how the last attempt went."""

    __tablename__ = "witness_states"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    witness: Mapped[str] = mapped_column(Text, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    accepted_at: Mapped[datetime | None] = mapped_column(TZ)
    last_attempt_at: Mapped[datetime] = mapped_column(TZ, server_default=text("now()"))
    last_outcome: Mapped[str] = mapped_column(Text)
    last_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
