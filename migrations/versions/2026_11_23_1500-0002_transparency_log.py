"""Verifiable log: per-tenant Merkle tree nodes and frontier, checkpoints, keys, witnesses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("merkle_nodes", "merkle_frontiers", "checkpoints", "witness_states")
APPEND_ONLY = ("merkle_nodes", "checkpoints", "checkpoint_keys")

# The same tenant scope as the events tables: a transaction sees the tenants it declared in
# `auditkit.tenants`, or every tenant under the explicit platform scope `*`.
IN_SCOPE = (
    "(tenant_id = ANY (string_to_array(current_setting('auditkit.tenants', true), ','))"
    " OR current_setting('auditkit.tenants', true) = '*')"
)


def upgrade() -> None:
    """Create the tables, make the write-once ones append-only, scope them per tenant."""
    # --8<-- [start:tables]
    op.execute(
        """
        CREATE TABLE merkle_nodes (
            tenant_id text     NOT NULL,
            level     smallint NOT NULL,
            idx       bigint   NOT NULL,
            hash      bytea    NOT NULL,
            CONSTRAINT pk_merkle_nodes PRIMARY KEY (tenant_id, level, idx),
            CONSTRAINT ck_merkle_nodes_level CHECK (level BETWEEN 0 AND 63),
            CONSTRAINT ck_merkle_nodes_idx CHECK (idx >= 0),
            CONSTRAINT ck_merkle_nodes_hash_len CHECK (octet_length(hash) = 32)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE merkle_frontiers (
            tenant_id  text        NOT NULL,
            tree_size  bigint      NOT NULL,
            frontier   bytea[]     NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_merkle_frontiers PRIMARY KEY (tenant_id),
            CONSTRAINT ck_merkle_frontiers_tree_size CHECK (tree_size >= 0),
            CONSTRAINT ck_merkle_frontiers_frontier_len
                CHECK (cardinality(frontier) = bit_count(tree_size::bit(64)))
        )
        """
    )
    op.execute(
        """
        CREATE TABLE checkpoints (
            tenant_id  text        NOT NULL,
            tree_size  bigint      NOT NULL,
            root_hash  bytea       NOT NULL,
            note       text        NOT NULL,
            key_name   text        NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_checkpoints PRIMARY KEY (tenant_id, tree_size),
            CONSTRAINT ck_checkpoints_tree_size CHECK (tree_size >= 0),
            CONSTRAINT ck_checkpoints_root_hash_len CHECK (octet_length(root_hash) = 32)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE checkpoint_keys (
            key_name      text        NOT NULL,
            public_key    bytea       NOT NULL,
            vkey          text        NOT NULL,
            first_used_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_checkpoint_keys PRIMARY KEY (key_name),
            CONSTRAINT uq_checkpoint_keys_vkey UNIQUE (vkey),
            CONSTRAINT ck_checkpoint_keys_public_key_len CHECK (octet_length(public_key) = 32)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE witness_states (
            tenant_id       text        NOT NULL,
            witness         text        NOT NULL,
            tree_size       bigint      NOT NULL DEFAULT 0,
            accepted_at     timestamptz,
            last_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_outcome    text        NOT NULL,
            last_reason     text        NOT NULL DEFAULT '',
            CONSTRAINT pk_witness_states PRIMARY KEY (tenant_id, witness),
            CONSTRAINT ck_witness_states_tree_size CHECK (tree_size >= 0)
        )
        """
    )
    # --8<-- [end:tables]

    # Nodes, checkpoints and keys are written once and never change; the function comes
    # from revision 0001.
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )

    # The service role may exist already (another branch of the chain creates it too).
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
    op.execute("GRANT SELECT, INSERT ON merkle_nodes, checkpoints, checkpoint_keys TO auditkit_app")
    op.execute("GRANT SELECT, INSERT, UPDATE ON merkle_frontiers, witness_states TO auditkit_app")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_tenant_scope ON {table} TO auditkit_app"
            f" USING {IN_SCOPE} WITH CHECK {IN_SCOPE}"
        )


def downgrade() -> None:
    """Drop everything this revision created (the role is kept)."""
    for table in (
        "witness_states",
        "checkpoint_keys",
        "checkpoints",
        "merkle_frontiers",
        "merkle_nodes",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
