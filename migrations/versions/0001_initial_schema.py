"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("brief", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("next_step", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed_step", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "available_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=True,
        ),
        sa.Column(
            "submitted_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("failed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("finished_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("updated_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "failed_step IS NULL OR failed_step IN ('normalize_brief', 'generate_strategy', 'generate_draft', 'qc_evaluate', 'deliver')",
            name=op.f("ck_workflow_runs_failed_step"),
        ),
        sa.CheckConstraint(
            "status <> 'compensating' OR failed_step IS NOT NULL",
            name=op.f("ck_workflow_runs_compensating_step"),
        ),
        sa.CheckConstraint(
            "(status IN ('completed', 'compensated')) = (available_at IS NULL)",
            name=op.f("ck_workflow_runs_claimable"),
        ),
        sa.CheckConstraint("status <> 'running' OR next_step < 5", name=op.f("ck_workflow_runs_running_step")),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'compensating', 'completed', 'compensated')",
            name=op.f("ck_workflow_runs_status"),
        ),
        sa.CheckConstraint("next_step BETWEEN 0 AND 5", name=op.f("ck_workflow_runs_next_step")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_runs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_workflow_runs_idempotency_key")),
        postgresql_with={"fillfactor": "70"},
    )
    op.create_index(
        "ix_workflow_runs_available_at",
        "workflow_runs",
        ["available_at"],
        unique=False,
        postgresql_where=sa.text("available_at IS NOT NULL"),
    )
    op.create_table(
        "onboarding_brief",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("tone", sa.Text(), nullable=False),
        sa.Column("budget_eur", sa.Integer(), nullable=False),
        sa.Column("word_limit", sa.Integer(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["workflow_runs.id"], name=op.f("fk_onboarding_brief_run_id_workflow_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_onboarding_brief")),
        info={"step": "normalize_brief"},
    )
    op.create_table(
        "onboarding_intake",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("brief_id", sa.UUID(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "brief_id"],
            ["onboarding_brief.run_id", "onboarding_brief.id"],
            name=op.f("fk_onboarding_intake_run_id_brief_id_onboarding_brief"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_onboarding_intake")),
        info={"step": "normalize_brief"},
    )
    op.create_index(
        op.f("ix_onboarding_intake_run_id_brief_id"),
        "onboarding_intake",
        ["run_id", "brief_id"],
        unique=False,
    )
    op.create_table(
        "strategy_document",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("brief_id", sa.UUID(), nullable=False),
        sa.Column("positioning", sa.Text(), nullable=False),
        sa.Column("key_messages", sa.Text(), nullable=False),
        sa.Column("channel_plan", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "brief_id"],
            ["onboarding_brief.run_id", "onboarding_brief.id"],
            name=op.f("fk_strategy_document_run_id_brief_id_onboarding_brief"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_strategy_document")),
        info={"step": "generate_strategy"},
    )
    op.create_index(
        op.f("ix_strategy_document_run_id_brief_id"),
        "strategy_document",
        ["run_id", "brief_id"],
        unique=False,
    )
    op.create_table(
        "production_drafts",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("strategy_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "strategy_id"],
            ["strategy_document.run_id", "strategy_document.id"],
            name=op.f("fk_production_drafts_run_id_strategy_id_strategy_document"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_production_drafts")),
        info={"step": "generate_draft"},
    )
    op.create_index(
        op.f("ix_production_drafts_run_id_strategy_id"),
        "production_drafts",
        ["run_id", "strategy_id"],
        unique=False,
    )
    op.create_table(
        "delivery_packages",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("draft_id", sa.UUID(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("total_words", sa.Integer(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "draft_id"],
            ["production_drafts.run_id", "production_drafts.id"],
            name=op.f("fk_delivery_packages_run_id_draft_id_production_drafts"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_delivery_packages")),
        info={"step": "deliver"},
    )
    op.create_index(
        op.f("ix_delivery_packages_run_id_draft_id"),
        "delivery_packages",
        ["run_id", "draft_id"],
        unique=False,
    )
    op.create_table(
        "production_bundles",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("draft_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "draft_id"],
            ["production_drafts.run_id", "production_drafts.id"],
            name=op.f("fk_production_bundles_run_id_draft_id_production_drafts"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_production_bundles")),
        info={"step": "generate_draft"},
    )
    op.create_index(
        op.f("ix_production_bundles_run_id_draft_id"),
        "production_bundles",
        ["run_id", "draft_id"],
        unique=False,
    )
    op.create_table(
        "qc_results",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("draft_id", sa.UUID(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "draft_id"],
            ["production_drafts.run_id", "production_drafts.id"],
            name=op.f("fk_qc_results_run_id_draft_id_production_drafts"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_qc_results")),
        info={"step": "qc_evaluate"},
    )
    op.create_index(op.f("ix_qc_results_run_id_draft_id"), "qc_results", ["run_id", "draft_id"], unique=False)
    op.create_table(
        "production_bundle_assets",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("bundle_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "bundle_id"],
            ["production_bundles.run_id", "production_bundles.id"],
            name=op.f("fk_production_bundle_assets_run_id_bundle_id_production_bundles"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_production_bundle_assets")),
        info={"step": "generate_draft"},
    )
    op.create_index(
        op.f("ix_production_bundle_assets_run_id_bundle_id"),
        "production_bundle_assets",
        ["run_id", "bundle_id"],
        unique=False,
    )
    op.create_table(
        "qc_issues",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("qc_result_id", sa.UUID(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "qc_result_id"],
            ["qc_results.run_id", "qc_results.id"],
            name=op.f("fk_qc_issues_run_id_qc_result_id_qc_results"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_qc_issues")),
        info={"step": "qc_evaluate"},
    )
    op.create_index(op.f("ix_qc_issues_run_id_qc_result_id"), "qc_issues", ["run_id", "qc_result_id"], unique=False)
    op.create_table(
        "delivery_artifacts",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("package_id", sa.UUID(), nullable=False),
        sa.Column("asset_id", sa.UUID(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "asset_id"],
            ["production_bundle_assets.run_id", "production_bundle_assets.id"],
            name=op.f("fk_delivery_artifacts_run_id_asset_id_production_bundle_assets"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id", "package_id"],
            ["delivery_packages.run_id", "delivery_packages.id"],
            name=op.f("fk_delivery_artifacts_run_id_package_id_delivery_packages"),
        ),
        sa.PrimaryKeyConstraint("run_id", "id", name=op.f("pk_delivery_artifacts")),
        info={"step": "deliver"},
    )
    op.create_index(
        op.f("ix_delivery_artifacts_run_id_asset_id"),
        "delivery_artifacts",
        ["run_id", "asset_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_delivery_artifacts_run_id_package_id"),
        "delivery_artifacts",
        ["run_id", "package_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_artifacts_run_id_package_id"), table_name="delivery_artifacts")
    op.drop_index(op.f("ix_delivery_artifacts_run_id_asset_id"), table_name="delivery_artifacts")
    op.drop_table("delivery_artifacts")
    op.drop_index(op.f("ix_qc_issues_run_id_qc_result_id"), table_name="qc_issues")
    op.drop_table("qc_issues")
    op.drop_index(op.f("ix_production_bundle_assets_run_id_bundle_id"), table_name="production_bundle_assets")
    op.drop_table("production_bundle_assets")
    op.drop_index(op.f("ix_qc_results_run_id_draft_id"), table_name="qc_results")
    op.drop_table("qc_results")
    op.drop_index(op.f("ix_production_bundles_run_id_draft_id"), table_name="production_bundles")
    op.drop_table("production_bundles")
    op.drop_index(op.f("ix_delivery_packages_run_id_draft_id"), table_name="delivery_packages")
    op.drop_table("delivery_packages")
    op.drop_index(op.f("ix_production_drafts_run_id_strategy_id"), table_name="production_drafts")
    op.drop_table("production_drafts")
    op.drop_index(op.f("ix_strategy_document_run_id_brief_id"), table_name="strategy_document")
    op.drop_table("strategy_document")
    op.drop_index(op.f("ix_onboarding_intake_run_id_brief_id"), table_name="onboarding_intake")
    op.drop_table("onboarding_intake")
    op.drop_table("onboarding_brief")
    op.drop_index(
        "ix_workflow_runs_available_at",
        table_name="workflow_runs",
        postgresql_where=sa.text("available_at IS NOT NULL"),
    )
    op.drop_table("workflow_runs")
