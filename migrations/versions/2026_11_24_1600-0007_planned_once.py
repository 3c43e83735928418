"""The ingest statements planned once per connection, in plans that cannot depend on size.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 16:00:00

Every ingest transaction runs the same statements: the three of `auditkit_open_batch` and
the one that writes the batch. Planned afresh at every commit (`force_custom_plan` on the
ingest connections), planning was a third of PostgreSQL's CPU at 1,000 events/s (`perf`
on its processes: 16 % the write, 15 % the function's statements). A plan kept from one
commit to the next is what prepared statements are for; it was refused because a generic
plan is costed once, with the statistics of that moment, and one made while the tables
were empty went on scanning the whole index table at every commit once they had grown.

Here the plan is kept and cannot be that plan. Both functions run their statements with
`plan_cache_mode = force_generic_plan` (each statement is planned once per connection)
and with sequential scans, hash joins and merge joins disabled. Every statement either
inserts rows from its arrays or finds rows by primary key, so what is left is the plan
that is right at any size: a primary-key probe for each key, lock and head, whatever the
planner believes about the tables. The settings hold only while a function runs; the rest
of the transaction and every other statement of the service plan as before.

The write moves into `auditkit_write_batch`, unchanged apart from ending in the chain-head
update instead of `SELECT 1`. Both run with the caller's rights (`SECURITY INVOKER`), so
row-level security applies to them as to the statements they replace.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# --8<-- [start:planned-once]
# Settings a function applies to its own statements while it runs (and only then).
PLANNED_ONCE = (
    "SET plan_cache_mode = force_generic_plan"
    " SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
)
# --8<-- [end:planned-once]

OPEN_BATCH = "auditkit_open_batch(text[], text[], uuid[])"
WRITE_BATCH = (
    "auditkit_write_batch(text[], bigint[], timestamptz, uuid[], timestamptz[], text[],"
    " text[], text[], text[], text[], text[], bytea[], bytea[], bytea[], text[], bytea[],"
    " bytea[], text[], smallint[], bigint[], bytea[], text[], bigint[], bytea[], text[],"
    " bigint[], bytea[])"
)

# Parameters by position, in the order `events.batch_write.write_batch` sends them: the
# event columns ($1-$17, `recorded_at` once as $3), the Merkle nodes ($18-$21), the
# frontiers ($22-$24) and the chain heads ($25-$27).
WRITE_BATCH_BODY = """
BEGIN
    WITH r AS (
        SELECT u.*, $3 AS recorded_at FROM unnest(
            $1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
        ) AS u(
            tenant_id, seq, event_id, occurred_at, action, category, outcome,
            data_classification, principal_id, subject_id, canonical, prev_hash, hash, key_id,
            signature, content_digest
        )
    ), events AS (
        INSERT INTO audit_events (
            tenant_id, seq, recorded_at, event_id, occurred_at, action, category, outcome,
            data_classification, principal_id, subject_id, canonical, prev_hash, hash, key_id,
            signature
        )
        SELECT tenant_id, seq, recorded_at, event_id, occurred_at, action, category, outcome,
            data_classification, principal_id, subject_id, canonical, prev_hash, hash, key_id,
            signature
        FROM r
    ), index_rows AS (
        INSERT INTO audit_event_index
            (tenant_id, event_id, seq, recorded_at, content_digest, hash, key_id)
        SELECT tenant_id, event_id, seq, recorded_at, content_digest, hash, key_id FROM r
    ), nodes AS (
        INSERT INTO merkle_nodes (tenant_id, level, idx, hash)
        SELECT * FROM unnest($18, $19, $20, $21)
    ), frontiers AS (
        INSERT INTO merkle_frontiers (tenant_id, tree_size, frontier)
        SELECT v.tenant_id, v.tree_size, ARRAY(
            SELECT substring(v.packed FROM g * 32 + 1 FOR 32)
            FROM generate_series(0, length(v.packed) / 32 - 1) AS g ORDER BY g
        )
        FROM unnest($22, $23, $24) AS v(tenant_id, tree_size, packed)
        ON CONFLICT (tenant_id) DO UPDATE
            SET tree_size = excluded.tree_size, frontier = excluded.frontier,
                updated_at = now()
    )
    UPDATE chain_heads AS h
    SET next_seq = v.next_seq, head_hash = v.head_hash, updated_at = now()
    FROM unnest($25, $26, $27) AS v(tenant_id, next_seq, head_hash)
    WHERE h.tenant_id = v.tenant_id;
END
"""


def upgrade() -> None:
    """Create `auditkit_write_batch`; both ingest functions plan once, by primary key."""
    op.execute(
        f"CREATE FUNCTION {WRITE_BATCH} RETURNS void"
        f" LANGUAGE plpgsql VOLATILE SECURITY INVOKER {PLANNED_ONCE}"
        f" AS $body${WRITE_BATCH_BODY}$body$"
    )
    op.execute(f"REVOKE ALL ON FUNCTION {WRITE_BATCH} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {WRITE_BATCH} TO auditkit_app")
    op.execute(f"ALTER FUNCTION {OPEN_BATCH} {PLANNED_ONCE}")


def downgrade() -> None:
    """Drop `auditkit_write_batch` and plan `auditkit_open_batch` per call again.

    The service of revision 0006 sends the write as a statement of its own.
    """
    op.execute(f"ALTER FUNCTION {OPEN_BATCH} RESET ALL")
    op.execute(f"DROP FUNCTION {WRITE_BATCH}")
