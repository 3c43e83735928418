"""Tables of the events domain.

`audit_events` is range-partitioned by month on `recorded_at` (migrations create the
partitions ahead, and a default partition so that no insert ever fails for want of one).
PostgreSQL cannot enforce a unique key on a partitioned table unless the key contains the
partition column, so uniqueness of `(tenant_id, event_id)` and `(tenant_id, seq)` lives in
the small, unpartitioned `audit_event_index`, which also answers idempotent retries.
`chain_heads` holds, per tenant, the next `seq` and the hash of the last event; locking its
row serialises writers of one tenant across every process.

The columns beside `canonical` are projections for queries. Verification recomputes the
hash over `canonical` only, and checks that the projections agree with it.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, Index, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Mapped, mapped_column

from reference_impl.core.db import Base

__all__ = ["AuditEvent", "AuditEventIndex", "ChainHeadRow", "TenantIntegrity"]

TZ = TIMESTAMP(timezone=True)


class AuditEvent(Base):
    """One stored audit event (append-only; a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_occurred", "tenant_id", "occurred_at"),
        Index("ix_audit_events_tenant_principal", "tenant_id", "principal_id", "seq"),
        Index("ix_audit_events_tenant_subject", "tenant_id", "subject_id", "seq"),
        Index(
            "ix_audit_events_tenant_action",
            "tenant_id",
            text("action text_pattern_ops"),
            "seq",
        ),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(TZ, primary_key=True)
    event_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True))
    occurred_at: Mapped[datetime] = mapped_column(TZ)
    action: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    data_classification: Mapped[str] = mapped_column(Text)
    principal_id: Mapped[str] = mapped_column(Text)
    subject_id: Mapped[str | None] = mapped_column(Text)
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEventIndex(Base):
    """Unique keys of events: `(tenant_id, event_id)` and `(tenant_id, seq)`, plus the receipt."""

    __tablename__ = "audit_event_index"
    __table_args__ = (UniqueConstraint("tenant_id", "seq"),)

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[UUID] = mapped_column(PG_UUID(as_uuid=True), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(TZ)
    content_digest: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(Text)


class ChainHeadRow(Base):
    """Per-tenant head of the hash chain: the next `seq` and the last event's hash."""

    __tablename__ = "chain_heads"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    next_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=text("now()"))


class TenantIntegrity(Base):
    """Outcome of the last verification of a tenant's chain, and its compromised mark."""

    __tablename__ = "tenant_integrity"

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    last_verified_at: Mapped[datetime | None] = mapped_column(TZ)
    last_verified_seq: Mapped[int | None] = mapped_column(BigInteger)
    compromised_at: Mapped[datetime | None] = mapped_column(TZ)
    compromised_seq: Mapped[int | None] = mapped_column(BigInteger)
    compromised_kind: Mapped[str | None] = mapped_column(Text)
    compromised_detail: Mapped[str | None] = mapped_column(Text)
