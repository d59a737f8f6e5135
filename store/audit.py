"""The invariants sagad promises, checked over the whole database with plain SQL."""

from __future__ import annotations

import math

from sagad.domain.steps import BUSINESS_TABLES, step_of_table
from sagad.store.db import Database
from sagad.store.records import AuditFinding, AuditReport

_EXAMPLES = 5


def _checks() -> list[tuple[str, str]]:
    """(invariant, query returning one text column per violation; $1 is the grace in seconds)."""
    checks: list[tuple[str, str]] = []
    for table in BUSINESS_TABLES:
        step = step_of_table(table)
        checks.append(
            (
                f"{table}: rows only for runs whose step {step} committed",
                f"SELECT t.run_id::text || ' (' || r.status || ')' FROM {table} t "
                f"JOIN workflow_runs r ON r.id = t.run_id "
                f"WHERE r.status IN ('pending', 'compensated') OR r.next_step <= {step.index}",
            )
        )
        checks.append(
            (
                f"{table}: every completed run has rows",
                f"SELECT r.id::text FROM workflow_runs r WHERE r.status = 'completed' "
                f"AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.run_id = r.id)",
            )
        )
    checks += [
        (
            "no run stuck past its lease",
            "SELECT id::text || ' held by ' || claimed_by || ' since ' || available_at::text "
            "FROM workflow_runs WHERE claimed_by IS NOT NULL "
            "AND available_at < now() - make_interval(secs => $1::float8)",
        ),
        (
            "terminal runs hold no lease",
            "SELECT id::text FROM workflow_runs WHERE status IN ('completed', 'compensated') "
            "AND (claimed_by IS NOT NULL OR available_at IS NOT NULL OR finished_at IS NULL)",
        ),
        (
            "compensated runs say which step failed and why",
            "SELECT id::text FROM workflow_runs WHERE status = 'compensated' "
            "AND (failed_step IS NULL OR last_error IS NULL)",
        ),
    ]
    return checks


_LONGEST_GRACE = 100 * 365 * 86400.0


async def audit_database(db: Database, *, grace_seconds: float = 0.0) -> AuditReport:
    """Run every check; a clean report means no orphan rows and no stuck runs."""
    if math.isnan(grace_seconds) or grace_seconds < 0:
        raise ValueError(f"grace_seconds must be a number >= 0, not {grace_seconds}")
    grace_seconds = min(grace_seconds, _LONGEST_GRACE)  # PostgreSQL intervals stop short of infinity
    findings = []
    for invariant, query in _checks():
        uses_grace = "$1" in query
        rows = await db.fetch(
            f"SELECT v, count(*) OVER () FROM ({query}) AS q(v) LIMIT {_EXAMPLES}",
            *([grace_seconds] if uses_grace else []),
        )
        if rows:
            findings.append(AuditFinding(invariant, int(rows[0][1]), tuple(str(row[0]) for row in rows)))
    counts = {
        row["status"]: int(row["n"])
        for row in await db.fetch("SELECT status, count(*) AS n FROM workflow_runs GROUP BY status")
    }
    return AuditReport(runs_by_status=counts, findings=tuple(findings))
