"""step outputs kept with the run, and the reason a compensation is held up

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("compensation_error", sa.Text(), nullable=True))
    op.create_table(
        "step_outputs",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("step", sa.SmallInteger(), nullable=False),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "step", name=op.f("pk_step_outputs")),
    )
    # Runs in flight have no outputs kept for the steps they passed: they start over at the first
    # step. Every row key is derived from the run and every insert is ON CONFLICT DO NOTHING, so the
    # steps they passed write nothing twice; they only hand their outputs on again.
    op.execute("UPDATE workflow_runs SET next_step = 0 WHERE status = 'running' AND next_step > 0")


def downgrade() -> None:
    op.drop_table("step_outputs")
    op.drop_column("workflow_runs", "compensation_error")
