"""Per-tenant integrity status: last verification, and the compromised mark.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `tenant_integrity`, kept apart from `chain_heads` so that marking a tenant
    compromised never waits on (or blocks) the ingest path's lock of its chain head."""
    op.execute(
        """
        CREATE TABLE tenant_integrity (
            tenant_id          text        NOT NULL,
            last_verified_at   timestamptz,
            last_verified_seq  bigint,
            compromised_at     timestamptz,
            compromised_seq    bigint,
            compromised_kind   text,
            compromised_detail text,
            CONSTRAINT pk_tenant_integrity PRIMARY KEY (tenant_id)
        )
        """
    )


def downgrade() -> None:
    """Drop `tenant_integrity`."""
    op.execute("DROP TABLE tenant_integrity")
