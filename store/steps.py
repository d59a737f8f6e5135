"""Group commits of steps and compensations, each fenced per run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from store.db import Database
from store.fence import lease_arrays, locked_leases
from store.records import Committed, Lease, Row, RunId, StepWrite, WorkerId
from store.schema import STEPS, children_first
from store.writes import delete_runs, insert_rows

_ADVANCE = f"""
    WITH {locked_leases("r.status = 'running' AND r.next_step = $5", ", $4::text[]")}
    UPDATE workflow_runs r SET
        next_step = CASE WHEN h.failure IS NULL THEN $5 + 1 ELSE r.next_step END,
        status = CASE WHEN h.failure IS NOT NULL THEN 'compensating'
                      WHEN $6 THEN 'completed' ELSE 'running' END,
        failed_step = CASE WHEN h.failure IS NOT NULL THEN $7 END,
        last_error = h.failure,
        failed_at = CASE WHEN h.failure IS NOT NULL THEN now() END,
        finished_at = CASE WHEN h.failure IS NULL AND $6 THEN now() END,
        claimed_by = CASE WHEN h.failure IS NULL AND $6 THEN NULL ELSE r.claimed_by END,
        available_at = CASE WHEN h.failure IS NULL AND $6 THEN NULL ELSE r.available_at END,
        updated_at = now()
    FROM locked l JOIN held h ON h.id = l.id
    WHERE r.id = l.id
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
"""

_FINISH_COMPENSATION = f"""
    WITH {locked_leases("r.status = 'compensating'")}
    UPDATE workflow_runs r SET
        status = 'compensated', finished_at = now(), claimed_by = NULL, available_at = NULL,
        updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
"""


class StepStore:
    """Writes a step's rows, or deletes a failed run's rows, for a batch of runs at once."""

    def __init__(self, db: Database, worker: WorkerId) -> None:
        self._db = db
        self._worker = worker

    async def commit_step(self, step: str, writes: Sequence[StepWrite]) -> Committed:
        """One transaction: advance (or mark failed) every run still ours, insert the rows of those.

        A run whose fence does not hold is left out, and none of its rows are written.
        """
        index = STEPS.index(step)
        ids, tokens = lease_arrays([w.lease for w in writes])
        failures = [w.failure for w in writes]
        is_last = index == len(STEPS) - 1
        async with self._db.transaction() as conn:
            owned_rows = await conn.fetch(_ADVANCE, ids, tokens, self._worker, failures, index, is_last, step)
            owned = {RunId(row["id"]): row["age"] for row in owned_rows}
            by_table: dict[str, list[Row]] = defaultdict(list)
            for write in writes:
                if write.failure is None and write.lease.run_id in owned:
                    for table, rows in write.rows.items():
                        by_table[table].extend(rows)
            written = {table: await insert_rows(conn, table, rows) for table, rows in by_table.items()}
        return Committed(owned=owned, rows=written)

    async def compensate(self, leases: Sequence[Lease], tables: frozenset[str]) -> Committed:
        """One transaction: mark the runs compensated and delete their rows, children first."""
        ids, tokens = lease_arrays(leases)
        async with self._db.transaction() as conn:
            owned_rows = await conn.fetch(_FINISH_COMPENSATION, ids, tokens, self._worker)
            owned = {RunId(row["id"]): row["age"] for row in owned_rows}
            deleted: dict[str, int] = {}
            if owned:
                run_ids = list(owned)
                for table in children_first(tables):
                    deleted[table] = await delete_runs(conn, table, run_ids)
        return Committed(owned=owned, rows=deleted)
