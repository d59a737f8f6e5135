"""Every table sagad owns, declared once on one MetaData.

Business tables lead their keys with the owning run: primary key ``(run_id, id)`` and foreign keys
``(run_id, parent_id)``. Compensation then deletes along primary keys, and the schema shards by
``run_id`` with a run's rows (and its compensation) on one shard. Foreign keys have no ON DELETE
CASCADE on purpose: compensation itself must delete children before parents.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

from sagad.domain.runs import STATUS_NAMES
from sagad.domain.steps import STEP_NAMES, Step, step_of_table

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The step names and statuses the CHECK constraints admit.
_STEPS = STEP_NAMES
_STATUSES = STATUS_NAMES

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("idempotency_key", Text, nullable=True),
    Column("brief", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    # Index of the next step to run; a step's commit advances it in the same transaction.
    Column("next_step", SmallInteger, nullable=False, server_default=text("0")),
    Column("failed_step", Text, nullable=True),
    Column("last_error", Text, nullable=True),
    # Why a compensation has not finished yet (an undo kept failing); cleared when it finishes.
    Column("compensation_error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("claimed_by", Text, nullable=True),
    Column("lease_token", BigInteger, nullable=False, server_default=text("0")),
    # When the run may next be claimed: submission time while pending, the lease's expiry while
    # held, NULL once terminal. One ordered index then serves new and abandoned runs alike.
    Column("available_at", TIMESTAMP(timezone=True), nullable=True, server_default=func.now()),
    Column("submitted_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", TIMESTAMP(timezone=True), nullable=True),
    Column("failed_at", TIMESTAMP(timezone=True), nullable=True),
    Column("finished_at", TIMESTAMP(timezone=True), nullable=True),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    # The compensated run this one retries (no foreign key: runs are never deleted, and a reference
    # would lock the old run's row at every submission of a retry).
    Column("retry_of", UUID(as_uuid=True), nullable=True),
    # A cancel asked for while the run was in flight: its holder (or the next claim) compensates it.
    Column("cancel_requested_at", TIMESTAMP(timezone=True), nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("cancelled_by", Text, nullable=True),
    CheckConstraint(f"status IN {_STATUSES!r}", name="status"),
    CheckConstraint(f"next_step BETWEEN 0 AND {len(_STEPS)}", name="next_step"),
    # Every non-terminal state names where the run goes next, so a claim can always route it.
    CheckConstraint(f"status <> 'running' OR next_step < {len(_STEPS)}", name="running_step"),
    CheckConstraint(f"failed_step IS NULL OR failed_step IN {_STEPS!r}", name="failed_step"),
    CheckConstraint("status <> 'compensating' OR failed_step IS NOT NULL", name="compensating_step"),
    # Only unfinished runs can be claimed, so the claim needs no status filter and walks the
    # available_at index in order (a filter on status made it a bitmap scan that grew with bloat).
    CheckConstraint("(status IN ('completed', 'compensated')) = (available_at IS NULL)", name="claimable"),
    UniqueConstraint("idempotency_key"),
    Index(
        "ix_workflow_runs_available_at",
        "available_at",
        postgresql_where=text("available_at IS NOT NULL"),
    ),
    # Operator lists go newest first (ids are UUIDv7, ordered by time), by status, failed step or cancel.
    Index("ix_workflow_runs_status_id", "status", "id"),
    Index("ix_workflow_runs_failed_step_id", "failed_step", "id", postgresql_where=text("failed_step IS NOT NULL")),
    Index("ix_workflow_runs_cancel_requested", "id", postgresql_where=text("cancel_requested_at IS NOT NULL")),
    # One retry per run: retrying a run again returns the run that retried it.
    UniqueConstraint("retry_of"),
    # Each step's commit updates the run row; free room on the page keeps those updates HOT.
    postgresql_with={"fillfactor": "70"},
)


# Fleet-wide intake: one row. While paused, every daemon's claim takes no pending run (runs already
# started, and abandoned ones, are still claimed and finished); submissions are stored and wait.
sagad_intake = Table(
    "sagad_intake",
    metadata,
    Column("id", SmallInteger, primary_key=True, server_default=text("1")),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("changed_at", TIMESTAMP(timezone=True), nullable=True),
    Column("changed_by", Text, nullable=True),
    Column("reason", Text, nullable=True),
    CheckConstraint("id = 1", name="one_row"),
)


# Each run's history, written by triggers on workflow_runs inside the statements that change it
# (migration 0004): no key of its own, so that no event can ever make a claim or a commit fail.
# Pruned by run age (`sagad runs prune-history`): run ids are ordered by time, so a cut is a key range.
run_history = Table(
    "run_history",
    metadata,
    Column("run_id", UUID(as_uuid=True), nullable=False),
    Column("at", TIMESTAMP(timezone=True), nullable=False),
    Column("event", Text, nullable=False),
    Column("step", Text, nullable=True),
    Column("worker", Text, nullable=True),
    Column("token", BigInteger, nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("detail", Text, nullable=True),
    Column("call_ms", REAL, nullable=True),
    Column("retry_reasons", Text, nullable=True),
    Column("rows", JSONB, nullable=True),  # a 'deleted' event's rows per table of the run
    Index("ix_run_history_run_id_at", "run_id", "at"),
)


# Each committed step's output, so that a run resumed by another daemon gets exactly what its
# earlier steps handed on. No foreign key: the step's commit already holds the run row, and a
# reference would lock it once more per output (the audit checks that none is orphaned). Kept as
# `json`, the text the step's encoder wrote: `jsonb` would reorder an object's keys, and a resumed
# run must see the very value the next step would have been handed in memory.
step_outputs = Table(
    "step_outputs",
    metadata,
    Column("run_id", UUID(as_uuid=True), primary_key=True),
    Column("step", SmallInteger, primary_key=True),
    Column("output", JSON, nullable=False),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    # The step's call, for the run's history: its attempts' time summed, how many, why they were
    # retried, and the lease token the commit ran under (whose claim names the daemon).
    Column("call_ms", REAL, nullable=True),
    Column("attempts", SmallInteger, nullable=True),
    Column("retry_reasons", Text, nullable=True),
    Column("token", BigInteger, nullable=True),
)


def _business_table(
    name: str,
    *columns: Column[object],
    parents: tuple[tuple[str, str], ...] = (),
) -> Table:
    """A table of the step that owns ``name``; ``parents`` maps a key column to the table it references."""
    fk_columns = [Column(column, UUID(as_uuid=True), nullable=False) for column, _ in parents]
    constraints = [
        ForeignKeyConstraint(["run_id", column], [f"{parent}.run_id", f"{parent}.id"]) for column, parent in parents
    ]
    indexes = [Index(None, "run_id", column) for column, _ in parents]
    return Table(
        name,
        metadata,
        # The primary key's leading run_id is the index on run_id. Only the root table references
        # workflow_runs: its descendants reach the run through their parents' (run_id, id) keys,
        # and every extra reference would lock the run row once per inserted row.
        Column("run_id", UUID(as_uuid=True), *([] if parents else [ForeignKey("workflow_runs.id")]), primary_key=True),
        Column("id", UUID(as_uuid=True), primary_key=True),
        *fk_columns,
        *columns,
        Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
        *constraints,
        *indexes,
        info={"step": step_of_table(name)},
    )


onboarding_brief = _business_table(
    "onboarding_brief",
    Column("client", Text, nullable=False),
    Column("product", Text, nullable=False),
    Column("audience", Text, nullable=False),
    Column("tone", Text, nullable=False),
    Column("budget_eur", Integer, nullable=False),
    Column("word_limit", Integer, nullable=False),
    Column("payload", JSONB, nullable=False),
)
onboarding_intake = _business_table(
    "onboarding_intake",
    Column("field", Text, nullable=False),
    Column("value", Text, nullable=False),
    parents=(("brief_id", "onboarding_brief"),),
)
strategy_document = _business_table(
    "strategy_document",
    Column("positioning", Text, nullable=False),
    Column("key_messages", Text, nullable=False),
    Column("channel_plan", Text, nullable=False),
    parents=(("brief_id", "onboarding_brief"),),
)
production_drafts = _business_table(
    "production_drafts",
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("word_count", Integer, nullable=False),
    parents=(("strategy_id", "strategy_document"),),
)
production_bundles = _business_table(
    "production_bundles",
    Column("channel", Text, nullable=False),
    parents=(("draft_id", "production_drafts"),),
)
production_bundle_assets = _business_table(
    "production_bundle_assets",
    Column("kind", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    parents=(("bundle_id", "production_bundles"),),
)
qc_results = _business_table(
    "qc_results",
    Column("score", Float, nullable=False),
    Column("passed", Boolean, nullable=False),
    parents=(("draft_id", "production_drafts"),),
)
qc_issues = _business_table(
    "qc_issues",
    Column("severity", Text, nullable=False),
    Column("message", Text, nullable=False),
    parents=(("qc_result_id", "qc_results"),),
)
delivery_packages = _business_table(
    "delivery_packages",
    Column("target", Text, nullable=False),
    Column("destination", Text, nullable=False),
    Column("total_words", Integer, nullable=False),
    parents=(("draft_id", "production_drafts"),),
)
delivery_artifacts = _business_table(
    "delivery_artifacts",
    Column("uri", Text, nullable=False),
    parents=(("package_id", "delivery_packages"), ("asset_id", "production_bundle_assets")),
)


def tables_of_step(step: Step) -> tuple[Table, ...]:
    """The business tables a step writes, parents before children."""
    return tuple(metadata.tables[name] for name in step.tables)


def children_first(names: set[str] | frozenset[str]) -> tuple[str, ...]:
    """Order table names so that every child comes before its parents (the safe delete order)."""
    return tuple(t.name for t in reversed(metadata.sorted_tables) if t.name in names)
