"""Wrapped data keys for field-level encryption.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_SCOPE = (
    "(tenant_id = ANY (string_to_array(current_setting('auditkit.tenants', true), ','))"
    " OR current_setting('auditkit.tenants', true) = '*')"
)


def upgrade() -> None:
    """Create `data_keys` (only ever wrapped keys; `wrapped` is NULL once destroyed)."""
    op.execute(
        """
        CREATE TABLE data_keys (
            id           text        NOT NULL,
            tenant_id    text        NOT NULL,
            kek_id       text        NOT NULL,
            wrapped      bytea,
            created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
            rewrapped_at timestamptz,
            destroyed_at timestamptz,
            CONSTRAINT pk_data_keys PRIMARY KEY (id)
        )
        """
    )
    op.execute("CREATE INDEX ix_data_keys_tenant_id ON data_keys (tenant_id, created_at)")
    op.execute("GRANT SELECT, INSERT, UPDATE ON data_keys TO auditkit_app")
    op.execute("ALTER TABLE data_keys ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY data_keys_tenant_scope ON data_keys TO auditkit_app"
        f" USING {IN_SCOPE} WITH CHECK {IN_SCOPE}"
    )


def downgrade() -> None:
    """Drop `data_keys` (every encrypted field becomes unreadable)."""
    op.execute("DROP TABLE data_keys")
