"""each step's call kept with its output, and what a compensation did, in the run's history

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A step's commit already inserts its output's row: the call's measure rides along in it (nullable,
# so rows committed before this migration, and by a daemon of before it, stay valid).
def _step_output_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("call_ms", sa.REAL(), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), nullable=True),
        sa.Column("retry_reasons", sa.Text(), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=True),
    )


# What a compensation keeps of them, and the rows it deleted per table of a run.
def _run_history_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("call_ms", sa.REAL(), nullable=True),
        sa.Column("retry_reasons", sa.Text(), nullable=True),
        sa.Column("rows", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def upgrade() -> None:
    for column in _step_output_columns():
        op.add_column("step_outputs", column)
    for column in _run_history_columns():
        op.add_column("run_history", column)


def downgrade() -> None:
    for column in _run_history_columns():
        op.drop_column("run_history", column.name)
    for column in _step_output_columns():
        op.drop_column("step_outputs", column.name)
