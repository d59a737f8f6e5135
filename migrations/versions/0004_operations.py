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
    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER workflow_runs_finished ON workflow_runs")
    op.execute("DROP FUNCTION sagad_notify_finished()")
    op.drop_table("sagad_intake")
    op.drop_index("ix_workflow_runs_failed_step_id", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_cancel_requested", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_status_id", table_name="workflow_runs")
    op.drop_constraint(op.f("uq_workflow_runs_retry_of"), "workflow_runs", type_="unique")
    op.drop_column("workflow_runs", "cancelled_by")
    op.drop_column("workflow_runs", "cancel_reason")
    op.drop_column("workflow_runs", "cancel_requested_at")
    op.drop_column("workflow_runs", "retry_of")
