"""operating runs: cancel marks, retry links, fleet-wide intake, a notification when a run ends

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One notification per run that reaches a terminal state, its id as payload: Client.wait sleeps on
# it. The WHEN clause is evaluated without calling the function, so other updates cost next to nothing.
_NOTIFY_FUNCTION = """
    CREATE FUNCTION sagad_notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('sagad_finished', NEW.id::text);
        RETURN NULL;
    END $$
"""
_NOTIFY_TRIGGER = """
    CREATE TRIGGER workflow_runs_finished AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW WHEN (NEW.status IN ('completed', 'compensated') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION sagad_notify_finished()
"""


# Each run's history, written by the statements that already run (claims, step commits, compensations,
# cancels) through a row trigger, no round trip of its own.
# Only what the run row and its outputs do not already say is recorded: each claim (the daemon and the
# lease token a run ran under; up to the tenth, then every hundredth, since a run whose undo keeps
# failing is claimed again every --undo-retry-seconds), a failure, an undo held up, the compensation, a
# cancel request. A step's commit is its output's `created_at`, and a completion the run's
# `finished_at`: recording them again cost the instant pipeline a fifth of its speed (bench.history_cost).
_HISTORY_ON_UPDATE = """
    CREATE FUNCTION sagad_history_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO run_history (run_id, at, event, step, worker, token, attempt, detail)
        SELECT NEW.id, now(), e.event, e.step, e.worker, NEW.lease_token, NEW.attempts, e.detail
        FROM (
            SELECT 'claimed' AS event, NULL::text AS step, NEW.claimed_by AS worker, NULL::text AS detail
            WHERE NEW.lease_token <> OLD.lease_token AND (NEW.attempts <= 10 OR NEW.attempts % 100 = 0)
            UNION ALL
            SELECT 'failed', NEW.failed_step, coalesce(OLD.claimed_by, NEW.claimed_by), NEW.last_error
            WHERE NEW.status = 'compensating' AND OLD.status <> 'compensating'
            UNION ALL
            SELECT 'undo held up', NEW.failed_step, OLD.claimed_by, NEW.compensation_error
            WHERE NEW.compensation_error IS NOT NULL AND NEW.compensation_error IS DISTINCT FROM OLD.compensation_error
            UNION ALL
            SELECT 'compensated', NULL, OLD.claimed_by, NEW.last_error
            WHERE NEW.status = 'compensated' AND OLD.status <> NEW.status
            UNION ALL
            SELECT 'cancel requested', NULL, NEW.cancelled_by, NEW.cancel_reason
            WHERE NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL
        ) e;
        RETURN NULL;
    END $$
"""
_HISTORY_ON_INSERT = """
    CREATE FUNCTION sagad_history_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO run_history (run_id, at, event, detail)
        SELECT n.id, now(), 'retry', n.retry_of::text FROM new_runs n WHERE n.retry_of IS NOT NULL;
        RETURN NULL;
    END $$
"""
_HISTORY_TRIGGERS = (
    # A row trigger whose WHEN is evaluated without calling the function: a step's commit that neither
    # fails nor finishes a run, and a renewal, cost next to nothing.
    """CREATE TRIGGER workflow_runs_history_on_update AFTER UPDATE ON workflow_runs FOR EACH ROW
       WHEN ((NEW.lease_token <> OLD.lease_token AND (NEW.attempts <= 10 OR NEW.attempts % 100 = 0))
             OR (NEW.status IN ('compensating', 'compensated') AND NEW.status <> OLD.status)
             OR NEW.compensation_error IS DISTINCT FROM OLD.compensation_error
             OR NEW.cancel_requested_at IS DISTINCT FROM OLD.cancel_requested_at)
       EXECUTE FUNCTION sagad_history_on_update()""",
    """CREATE TRIGGER workflow_runs_history_on_insert AFTER INSERT ON workflow_runs
       REFERENCING NEW TABLE AS new_runs
       FOR EACH STATEMENT EXECUTE FUNCTION sagad_history_on_insert()""",
)


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("retry_of", sa.UUID(), nullable=True))
    op.add_column("workflow_runs", sa.Column("cancel_requested_at", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column("workflow_runs", sa.Column("cancel_reason", sa.Text(), nullable=True))
    op.add_column("workflow_runs", sa.Column("cancelled_by", sa.Text(), nullable=True))
    op.create_unique_constraint(op.f("uq_workflow_runs_retry_of"), "workflow_runs", ["retry_of"])
    op.create_index("ix_workflow_runs_status_id", "workflow_runs", ["status", "id"], unique=False)
    op.create_index(
        "ix_workflow_runs_cancel_requested",
        "workflow_runs",
        ["id"],
        unique=False,
        postgresql_where=sa.text("cancel_requested_at IS NOT NULL"),
    )
    op.create_index(
        "ix_workflow_runs_failed_step_id",
        "workflow_runs",
        ["failed_step", "id"],
        unique=False,
        postgresql_where=sa.text("failed_step IS NOT NULL"),
    )
    op.create_table(
        "sagad_intake",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("changed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("changed_by", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_sagad_intake_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagad_intake")),
    )
    op.execute("INSERT INTO sagad_intake (id) VALUES (1)")
    op.create_table(
        "run_history",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_run_history_run_id_at", "run_history", ["run_id", "at"], unique=False)
    op.execute(_HISTORY_ON_UPDATE)
    op.execute(_HISTORY_ON_INSERT)
    for trigger in _HISTORY_TRIGGERS:
        op.execute(trigger)
    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER workflow_runs_finished ON workflow_runs")
    op.execute("DROP FUNCTION sagad_notify_finished()")
    op.execute("DROP TRIGGER workflow_runs_history_on_insert ON workflow_runs")
    op.execute("DROP TRIGGER workflow_runs_history_on_update ON workflow_runs")
    op.execute("DROP FUNCTION sagad_history_on_insert()")
    op.execute("DROP FUNCTION sagad_history_on_update()")
    op.drop_index("ix_run_history_run_id_at", table_name="run_history")
    op.drop_table("run_history")
    op.drop_table("sagad_intake")
    op.drop_index("ix_workflow_runs_failed_step_id", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_cancel_requested", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_status_id", table_name="workflow_runs")
    op.drop_constraint(op.f("uq_workflow_runs_retry_of"), "workflow_runs", type_="unique")
    op.drop_column("workflow_runs", "cancelled_by")
    op.drop_column("workflow_runs", "cancel_reason")
    op.drop_column("workflow_runs", "cancel_requested_at")
    op.drop_column("workflow_runs", "retry_of")
