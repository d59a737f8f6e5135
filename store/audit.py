"""The invariants sagad promises, checked with plain SQL: over the whole database, or over a recent window.

Every check reads the runs whose ids fall in a range (the window). Run ids are ordered by time
(UUIDv7), so the runs submitted since a moment are a range of the primary key of ``workflow_runs``
and of every business table (their keys lead with ``run_id``): a window's audit reads the window,
whatever the history. Runs from before time-ordered ids (random ids) are checked by the full audit.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable

from sagad.domain.steps import BUSINESS_TABLES, step_of_table
from sagad.store.db import Database
from sagad.store.records import AuditFinding, AuditReport

_EXAMPLES = 5
_EVERY_RUN = (uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1))
_CLOCK_SKEW_MS = 60_000
"""How far ahead of this machine's clock another daemon's clock may be when it makes a run id."""

Progress = Callable[[str, int, int], None]
"""Told before each check: what it checks, and how many checks are done out of how many."""


def _checks() -> list[tuple[str, str]]:
    """(invariant, query returning one text column per violation).

    A query reads either the range of run ids checked ($1 to $2) or the grace in seconds ($1).
    """
    checks: list[tuple[str, str]] = []
    for table in BUSINESS_TABLES:
        step = step_of_table(table)
        checks.append(
            (
                f"{table}: rows only for runs whose step {step} committed",
                f"SELECT t.run_id::text || ' (' || r.status || ')' FROM {table} t "
                f"JOIN workflow_runs r ON r.id = t.run_id "
                f"WHERE t.run_id BETWEEN $1 AND $2 "
                f"AND (r.status IN ('pending', 'compensated') OR r.next_step <= {step.index})",
            )
        )
        checks.append(
            (
                f"{table}: every completed run has rows",
                f"SELECT r.id::text FROM workflow_runs r WHERE r.id BETWEEN $1 AND $2 AND r.status = 'completed' "
                f"AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.run_id = r.id)",
            )
        )
    checks += [
        (
            "step outputs only for steps a run committed",
            "SELECT o.run_id::text || ' step ' || o.step::text FROM step_outputs o "
            "LEFT JOIN workflow_runs r ON r.id = o.run_id "
            "WHERE o.run_id BETWEEN $1 AND $2 "
            "AND (r.id IS NULL OR r.status IN ('pending', 'compensated') OR o.step >= r.next_step)",
        ),
        (
            "no run stuck past its lease",
            "SELECT id::text || ' held by ' || claimed_by || ' since ' || available_at::text "
            "FROM workflow_runs WHERE claimed_by IS NOT NULL "
            "AND available_at < now() - make_interval(secs => $1::float8)",
        ),
        (
            "terminal runs hold no lease",
            "SELECT id::text FROM workflow_runs WHERE id BETWEEN $1 AND $2 "
            "AND status IN ('completed', 'compensated') "
            "AND (claimed_by IS NOT NULL OR available_at IS NOT NULL OR finished_at IS NULL)",
        ),
        (
            "compensated runs say which step failed and why",
            "SELECT id::text FROM workflow_runs WHERE id BETWEEN $1 AND $2 AND status = 'compensated' "
            "AND (failed_step IS NULL OR last_error IS NULL)",
        ),
    ]
    return checks


_LONGEST_GRACE = 100 * 365 * 86400.0


def window(since_seconds: float, now: float | None = None) -> tuple[uuid.UUID, uuid.UUID]:
    """The run ids of runs submitted in the last ``since_seconds`` (time-ordered ids)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    first_ms = max(0, now_ms - int(since_seconds * 1000))
    return uuid.UUID(int=first_ms << 80), uuid.UUID(int=(now_ms + _CLOCK_SKEW_MS) << 80 | (1 << 80) - 1)


async def audit_database(
    db: Database,
    *,
    grace_seconds: float = 0.0,
    since_seconds: float | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Run every check; a clean report means no orphan rows and no stuck runs.

    With ``since_seconds``, only the runs submitted in that window are read (and the stuck runs,
    which the index of unfinished runs finds): a cost that does not grow with history.
    """
    if math.isnan(grace_seconds) or grace_seconds < 0:
        raise ValueError(f"grace_seconds must be a number >= 0, not {grace_seconds}")
    if since_seconds is not None and not since_seconds > 0:
        raise ValueError(f"since_seconds must be a number > 0, not {since_seconds}")
    grace_seconds = min(grace_seconds, _LONGEST_GRACE)  # PostgreSQL intervals stop short of infinity
    first, last = _EVERY_RUN if since_seconds is None else window(since_seconds)
    checks = _checks()
    findings = []
    for done, (invariant, query) in enumerate(checks):
        if progress is not None:
            progress(invariant, done, len(checks))
        arguments = (first, last) if "$2" in query else (grace_seconds,)
        rows = await db.fetch(f"SELECT v, count(*) OVER () FROM ({query}) AS q(v) LIMIT {_EXAMPLES}", *arguments)
        if rows:
            findings.append(AuditFinding(invariant, int(rows[0][1]), tuple(str(row[0]) for row in rows)))
    if progress is not None:
        progress("runs by status", len(checks), len(checks))
    counts = {
        row["status"]: int(row["n"])
        for row in await db.fetch(
            "SELECT status, count(*) AS n FROM workflow_runs WHERE id BETWEEN $1 AND $2 GROUP BY status", first, last
        )
    }
    return AuditReport(runs_by_status=counts, findings=tuple(findings))
