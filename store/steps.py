"""Group commits of steps and compensations, each fenced per run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

from sagad.domain.rows import Committed, Row, StepWrite
from sagad.domain.runs import Lease, RunId, WorkerId
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.fence import lease_arrays, locked_leases
from sagad.store.schema import children_first, tables_of_step
from sagad.store.writes import column_arrays, delete_runs, insert_statement, written_columns

_ADVANCE = """
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
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age, h.failure IS NULL AS ok
"""
_FENCE_PARAMS = 7

# A retry after a connection was lost may find its first attempt committed: the run is already
# past this step (or failed at it) under this very lease. It is ours to hand on, not a lost lease.
_ALREADY_PAST_STEP = """
    SELECT r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
    FROM workflow_runs r JOIN held h ON h.id = r.id AND h.token = r.lease_token
    WHERE (r.claimed_by = $3 AND (r.next_step > $5 OR (r.status = 'compensating' AND r.failed_step = $7)))
       OR (r.status = 'completed' AND $6)
"""


@cache
def step_statement(step: Step) -> str:
    """A step's whole commit as ONE statement (one round trip, atomic without BEGIN/COMMIT).

    $1-$7 fence and advance the runs; then one array per column of each table the step writes,
    inserted only for the runs the fence let through and that did not fail.
    """
    parts = [locked_leases("r.status = 'running' AND r.next_step = $5", ", $4::text[]"), f"advanced AS ({_ADVANCE})"]
    param = _FENCE_PARAMS + 1
    for table in tables_of_step(step):
        insert = insert_statement(table.name, param, "SELECT id FROM advanced WHERE ok")
        parts.append(f"insert_{table.name} AS ({insert})")
        param += len(written_columns(table.name))
    return f"WITH {', '.join(parts)} SELECT id, age FROM advanced UNION ALL {_ALREADY_PAST_STEP}"


_FINISH_COMPENSATION = f"""
    WITH {locked_leases("r.status = 'compensating'")}
    UPDATE workflow_runs r SET
        status = 'compensated', finished_at = now(), claimed_by = NULL, available_at = NULL,
        updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age, true AS fresh
"""

# As for steps: a retry may find the first attempt's commit done, under this very lease.
_ALREADY_COMPENSATED = """
    SELECT r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age, false AS fresh
    FROM workflow_runs r JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, token)
         ON h.id = r.id AND h.token = r.lease_token
    WHERE r.status = 'compensated'
"""


class StepStore:
    """Writes a step's rows, or deletes a failed run's rows, for a batch of runs at once."""

    def __init__(self, db: Database, worker: WorkerId) -> None:
        self._db = db
        self._worker = worker

    async def commit_step(self, step: Step, writes: Sequence[StepWrite]) -> Committed:
        """One statement: advance (or mark failed) every run still ours, insert the rows of those.

        A run whose fence does not hold is left out, and none of its rows are written.
        """
        ids, tokens = lease_arrays([w.lease for w in writes])
        failures = [w.failure for w in writes]
        by_table: dict[str, list[Row]] = defaultdict(list)
        for write in writes:
            if write.failure is None:
                for table, rows in write.rows.items():
                    by_table[table].extend(rows)
        arrays = [array for t in tables_of_step(step) for array in column_arrays(t.name, by_table[t.name])]
        async with self._db.connection() as conn:
            owned_rows = await conn.fetch(
                step_statement(step), ids, tokens, self._worker, failures, step.index, step.is_last, step.value, *arrays
            )
        return Committed(owned={RunId(row["id"]): row["age"] for row in owned_rows})

    async def compensate(self, leases: Sequence[Lease], tables: frozenset[str]) -> Committed:
        """One transaction: mark the runs compensated and delete their rows, children first."""
        ids, tokens = lease_arrays(leases)
        async with self._db.transaction() as conn:
            owned_rows = await conn.fetch(_FINISH_COMPENSATION, ids, tokens, self._worker)
            owned_rows += await conn.fetch(_ALREADY_COMPENSATED, ids, tokens)
            owned = {RunId(row["id"]): row["age"] for row in owned_rows}
            deleted: dict[str, int] = {}
            run_ids = [row["id"] for row in owned_rows if row["fresh"]]
            if run_ids:
                for table in children_first(tables):
                    deleted[table] = await delete_runs(conn, table, run_ids)
        return Committed(owned=owned, rows=deleted)
