"""step outputs kept as the JSON text the step returned, keys in their order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # jsonb reorders an object's keys; a run resumed by another daemon must see the output it would
    # have been handed in memory, so the text is kept as the step's encoder wrote it.
    op.alter_column(
        "step_outputs",
        "output",
        type_=sa.JSON(),
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        existing_nullable=False,
        postgresql_using="output::json",
    )


def downgrade() -> None:
    op.alter_column(
        "step_outputs",
        "output",
        type_=postgresql.JSONB(astext_type=sa.Text()),
        existing_type=sa.JSON(),
        existing_nullable=False,
        postgresql_using="output::jsonb",
    )
