"""Tenant isolation in the database: the service role, row-level security, key lookup.

The service connects as (or `SET ROLE`s to) `auditkit_app`, which owns nothing and cannot
bypass row-level security. Every transaction declares the tenants it works for in the
setting `auditkit.tenants` (comma-separated; tenant ids cannot contain a comma); the
policies let a statement see and write only those tenants' rows. A query that forgets its
`WHERE tenant_id = ...` therefore still sees one tenant. The value `*` is the explicit scope
of platform operations (listing tenants, scheduled verification of all of them).

API keys are looked up by prefix before the tenant is known, through a SECURITY DEFINER
function that returns only the row with that prefix.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("audit_events", "audit_event_index", "chain_heads", "tenant_integrity", "api_keys")

# --8<-- [start:policy]
IN_SCOPE = (
    "(tenant_id = ANY (string_to_array(current_setting('auditkit.tenants', true), ','))"
    " OR current_setting('auditkit.tenants', true) = '*')"
)
# --8<-- [end:policy]


def upgrade() -> None:
    """Create the role, grant it what the service needs, and turn on row-level security."""
    op.execute("ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz")
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'auditkit_app') THEN
                CREATE ROLE auditkit_app NOLOGIN NOBYPASSRLS;
            END IF;
        END
        $$
        """
    )
    op.execute("GRANT USAGE ON SCHEMA public TO auditkit_app")
    # Append-only: the service role may read and insert events, never change them.
    op.execute("GRANT SELECT, INSERT ON audit_events, audit_event_index TO auditkit_app")
    op.execute("GRANT SELECT, INSERT, UPDATE ON chain_heads, tenant_integrity TO auditkit_app")
    op.execute("GRANT SELECT, INSERT, UPDATE ON api_keys TO auditkit_app")
    op.execute("GRANT SELECT ON alembic_version TO auditkit_app")
    # Creating partitions needs the owner's rights: run it as the owner, with a fixed path.
    op.execute(
        "ALTER FUNCTION audit_ensure_partitions(integer) SECURITY DEFINER"
        " SET search_path = public, pg_temp"
    )
    op.execute("REVOKE ALL ON FUNCTION audit_ensure_partitions(integer) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION audit_ensure_partitions(integer) TO auditkit_app")

    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_tenant_scope ON {table} TO auditkit_app"
            f" USING {IN_SCOPE} WITH CHECK {IN_SCOPE}"
        )

    op.execute(
        """
        CREATE FUNCTION auditkit_api_key(key_prefix text)
        RETURNS SETOF api_keys
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = public, pg_temp
        AS $$ SELECT * FROM api_keys WHERE prefix = key_prefix $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION auditkit_api_key(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION auditkit_api_key(text) TO auditkit_app")


def downgrade() -> None:
    """Remove the policies, the lookup function and the column (the role is kept)."""
    op.execute("DROP FUNCTION IF EXISTS auditkit_api_key(text)")
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS {table}_tenant_scope ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("ALTER FUNCTION audit_ensure_partitions(integer) SECURITY INVOKER")
    op.execute("ALTER TABLE api_keys DROP COLUMN last_used_at")
