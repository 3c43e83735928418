"""Core schema: partitioned append-only events, their unique index, chain heads, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 14:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables, the partition maintenance function and the immutability triggers."""
    # --8<-- [start:events-table]
    op.execute(
        """
        CREATE TABLE audit_events (
            tenant_id           text        NOT NULL,
            seq                 bigint      NOT NULL,
            recorded_at         timestamptz NOT NULL,
            event_id            uuid        NOT NULL,
            occurred_at         timestamptz NOT NULL,
            action              text        NOT NULL,
            category            text        NOT NULL,
            outcome             text        NOT NULL,
            data_classification text        NOT NULL,
            principal_id        text        NOT NULL,
            subject_id          text,
            canonical           bytea       NOT NULL,
            prev_hash           bytea       NOT NULL,
            hash                bytea       NOT NULL,
            key_id              text        NOT NULL,
            signature           bytea       NOT NULL,
            CONSTRAINT pk_audit_events PRIMARY KEY (tenant_id, seq, recorded_at),
            CONSTRAINT ck_audit_events_hash_len CHECK (octet_length(hash) = 32),
            CONSTRAINT ck_audit_events_prev_hash_len CHECK (octet_length(prev_hash) = 32)
        ) PARTITION BY RANGE (recorded_at)
        """
    )
    # --8<-- [end:events-table]
    op.execute("CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT")
    op.execute(
        "CREATE INDEX ix_audit_events_tenant_occurred ON audit_events (tenant_id, occurred_at)"
    )
    op.execute(
        "CREATE INDEX ix_audit_events_tenant_principal"
        " ON audit_events (tenant_id, principal_id, seq)"
    )
    op.execute(
        "CREATE INDEX ix_audit_events_tenant_subject ON audit_events (tenant_id, subject_id, seq)"
    )
    op.execute(
        "CREATE INDEX ix_audit_events_tenant_action"
        " ON audit_events (tenant_id, action text_pattern_ops, seq)"
    )

    op.execute(
        """
        CREATE TABLE audit_event_index (
            tenant_id      text        NOT NULL,
            event_id       uuid        NOT NULL,
            seq            bigint      NOT NULL,
            recorded_at    timestamptz NOT NULL,
            content_digest bytea       NOT NULL,
            hash           bytea       NOT NULL,
            key_id         text        NOT NULL,
            CONSTRAINT pk_audit_event_index PRIMARY KEY (tenant_id, event_id),
            CONSTRAINT uq_audit_event_index_tenant_id_seq UNIQUE (tenant_id, seq)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE chain_heads (
            tenant_id  text        NOT NULL,
            next_seq   bigint      NOT NULL,
            head_hash  bytea       NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_chain_heads PRIMARY KEY (tenant_id),
            CONSTRAINT ck_chain_heads_next_seq CHECK (next_seq >= 0)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE api_keys (
            id          uuid        NOT NULL,
            prefix      text        NOT NULL,
            secret_hash bytea       NOT NULL,
            tenant_id   text        NOT NULL,
            name        text        NOT NULL,
            roles       text[]      NOT NULL DEFAULT '{}',
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz,
            revoked_at  timestamptz,
            CONSTRAINT pk_api_keys PRIMARY KEY (id),
            CONSTRAINT uq_api_keys_prefix UNIQUE (prefix)
        )
        """
    )
    op.execute("CREATE INDEX ix_api_keys_tenant_id ON api_keys (tenant_id)")

    # --8<-- [start:immutability]
    op.execute(
        """
        CREATE FUNCTION audit_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in ("audit_events", "audit_event_index"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
    # --8<-- [end:immutability]

    # --8<-- [start:partitions]
    op.execute(
        """
        CREATE FUNCTION audit_ensure_partitions(months_ahead integer DEFAULT 3)
        RETURNS integer
        LANGUAGE plpgsql AS $$
        DECLARE
            first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
            month_start date;
            part_name   text;
            created     integer := 0;
        BEGIN
            -- Several API processes run this at start; one at a time.
            PERFORM pg_advisory_xact_lock(hashtext('audit_ensure_partitions'));
            FOR i IN 0..months_ahead LOOP
                month_start := (first_month + make_interval(months => i))::date;
                part_name := format('audit_events_%s', to_char(month_start, 'YYYY_MM'));
                IF to_regclass(part_name) IS NULL THEN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                        part_name,
                        month_start::timestamp AT TIME ZONE 'UTC',
                        (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
                    created := created + 1;
                END IF;
            END LOOP;
            RETURN created;
        END
        $$
        """
    )
    op.execute("SELECT audit_ensure_partitions(3)")
    # --8<-- [end:partitions]


def downgrade() -> None:
    """Drop everything this revision created."""
    op.execute("DROP FUNCTION IF EXISTS audit_ensure_partitions(integer)")
    op.execute("DROP TABLE IF EXISTS api_keys")
    op.execute("DROP TABLE IF EXISTS chain_heads")
    op.execute("DROP TABLE IF EXISTS audit_event_index")
    op.execute("DROP TABLE IF EXISTS audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")
