"""Group commits of steps and compensations: each ONE statement, fenced per run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

from sagad.domain.rows import Committed, Row, StepWrite
from sagad.domain.runs import Lease, RunId, WorkerId
from sagad.domain.steps import STEP_NAMES, Step
from sagad.errors import PermanentDatabaseError
from sagad.store.db import Database
from sagad.store.fence import FENCE_PARAMS, lease_arrays, locked_leases, skipped_leases
from sagad.store.schema import children_first, tables_of_step
from sagad.store.statements import Statement
from sagad.store.writes import column_arrays, delete_statement, insert_statement, written_columns

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

_KEEP_OUTPUTS = """
    INSERT INTO step_outputs (run_id, step, output)
    SELECT h.id, $5, h.output::json FROM held h JOIN advanced a ON a.id = h.id WHERE a.ok
    ON CONFLICT DO NOTHING
"""
# What a step's commit binds, after the fence's: $4 failures ... $8 outputs, then the row arrays.
_STEP_PARAMS = (*FENCE_PARAMS, "failures", "step_index", "is_last", "step_name", "outputs")
_STEP_FENCE = "r.status = 'running' AND r.next_step = $5"

# A retry after a connection was lost may find its first attempt committed: the run is already
# past this step (or failed at it) under this very lease. It is ours to hand on, not a lost lease.
_ALREADY_PAST_STEP = """
    SELECT r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age, 'owned' AS state
    FROM workflow_runs r JOIN held h ON h.id = r.id AND h.token = r.lease_token
    WHERE (r.claimed_by = $3 AND (r.next_step > $5 OR (r.status = 'compensating' AND r.failed_step = $7)))
       OR (r.status = 'completed' AND $6)
"""


@cache
def step_statement(step: Step) -> Statement:
    """A step's whole commit as ONE statement (one round trip, atomic without BEGIN/COMMIT).

    The fence and ``_STEP_PARAMS`` advance the runs and keep their outputs; then one array per
    column of each table the step writes (named ``table.column``), inserted only for the runs the
    fence let through and that did not fail. Each run comes back ``owned`` (written, or found
    written by an earlier attempt) or ``skipped`` (another transaction holds its row); a run not
    returned lost its lease.
    """
    parts = [
        locked_leases(_STEP_FENCE, ", $4::text[], $8::text[]", ", failure, output", skip_locked=True),
        f"advanced AS ({_ADVANCE})",
        f"outputs AS ({_KEEP_OUTPUTS})",
    ]
    params = list(_STEP_PARAMS)
    for table in tables_of_step(step):
        insert = insert_statement(table.name, len(params) + 1, "SELECT id FROM advanced WHERE ok")
        parts.append(f"insert_{table.name} AS ({insert})")
        params += [f"{table.name}.{column}" for column in written_columns(table.name)]
    sql = (
        f"WITH {', '.join(parts)} SELECT id, age, 'owned' AS state FROM advanced "
        f"UNION ALL {_ALREADY_PAST_STEP} "
        f"UNION ALL SELECT id, 0::float8, 'skipped' FROM ({skipped_leases(_STEP_FENCE)}) AS s"
    )
    return Statement(sql, tuple(params))


_FINISH_COMPENSATION = """
    UPDATE workflow_runs r SET
        status = 'compensated', finished_at = now(), claimed_by = NULL, available_at = NULL,
        compensation_error = NULL, updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
"""

# As for steps: a retry may find the first attempt's commit done, under this very lease.
_ALREADY_COMPENSATED = """
    SELECT 'run', r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8
    FROM workflow_runs r JOIN held h ON h.id = r.id AND h.token = r.lease_token
    WHERE r.status = 'compensated'
"""
_COMPENSATION_FENCE = "r.status = 'compensating'"
_DELETE_OUTPUTS = """
    DELETE FROM step_outputs WHERE run_id = ANY(ARRAY(SELECT id FROM finished)) RETURNING run_id, step, created_at
"""
# A compensated run's history keeps when each of its steps committed, which its outputs said until now.
_KEEP_COMMITS = """
    INSERT INTO run_history (run_id, at, event, step)
    SELECT run_id, created_at, 'committed', ($4::text[])[step + 1] FROM delete_step_outputs
"""
_DOOMED = "ARRAY(SELECT id FROM finished)"
_STEP_NAMES = list(STEP_NAMES)


@cache
def compensation_statement(tables: frozenset[str]) -> Statement:
    """A compensation of many runs as ONE statement: mark them compensated and delete all their rows.

    The deletes come children first; PostgreSQL checks the foreign keys at the end of the
    statement, when every row of the runs is gone. Rows come back as (kind, run id, value):
    ``run`` with the run's age for each run finished (or found finished by an earlier attempt),
    ``skipped`` for a run whose row another transaction holds, and one row per table with the
    number of rows deleted from it.
    """
    parts = [
        locked_leases(_COMPENSATION_FENCE, skip_locked=True),
        f"finished AS ({_FINISH_COMPENSATION})",
    ]
    counts = []
    for table in children_first(tables):
        parts.append(f"delete_{table} AS ({delete_statement(table, _DOOMED)})")
        counts.append(f"SELECT '{table}', NULL::uuid, count(*)::float8 FROM delete_{table}")
    parts += [f"delete_step_outputs AS ({_DELETE_OUTPUTS})", f"kept_commits AS ({_KEEP_COMMITS})"]
    counts.append("SELECT 'step_outputs', NULL::uuid, count(*)::float8 FROM delete_step_outputs")
    sql = (
        f"WITH {', '.join(parts)} SELECT 'run' AS kind, id, age AS value FROM finished "
        f"UNION ALL {_ALREADY_COMPENSATED} "
        f"UNION ALL SELECT 'skipped', id, 0::float8 FROM ({skipped_leases(_COMPENSATION_FENCE)}) AS s "
        f"UNION ALL {' UNION ALL '.join(counts)}"
    )
    return Statement(sql, (*FENCE_PARAMS, "step_names"))


# An undo that keeps failing: the run stays compensating, given back with the reason, to be
# tried again (by any daemon) once ``available_at`` comes.
_DEFER_COMPENSATION = Statement(
    f"""
    WITH {locked_leases(_COMPENSATION_FENCE, ", $4::text[]", ", error")}
    UPDATE workflow_runs r SET
        compensation_error = h.error, claimed_by = NULL,
        available_at = now() + make_interval(secs => $5), updated_at = now()
    FROM locked l JOIN held h ON h.id = l.id
    WHERE r.id = l.id
    RETURNING r.id
""",
    (*FENCE_PARAMS, "errors", "retry_seconds"),
)


class StepStore:
    """Writes a step's rows, or deletes a failed run's rows, for a batch of runs at once."""

    def __init__(self, db: Database, worker: WorkerId) -> None:
        self._db = db
        self._worker = worker

    async def commit_step(self, step: Step, writes: Sequence[StepWrite]) -> Committed:
        """One statement: advance (or mark failed) every run still ours, insert the rows and outputs of those.

        A run whose fence does not hold is left out, and none of its rows are written.
        """
        ids, tokens = lease_arrays([w.lease for w in writes])
        failures = [w.failure for w in writes]
        outputs = [w.output for w in writes]
        by_table: dict[str, list[Row]] = defaultdict(list)
        for write in writes:
            if write.failure is None:
                for table, rows in write.rows.items():
                    by_table[table].extend(rows)
        values: dict[str, object] = {
            "run_ids": ids,
            "tokens": tokens,
            "worker": self._worker,
            "failures": failures,
            "step_index": step.index,
            "is_last": step.is_last,
            "step_name": step.value,
            "outputs": outputs,
        }
        try:
            for written in tables_of_step(step):
                name = written.name
                arrays = column_arrays(name, by_table[name])
                values.update(zip((f"{name}.{column}" for column in written_columns(name)), arrays, strict=True))
        except (KeyError, TypeError, ValueError) as error:  # a row missing a column, or a value JSON cannot hold
            raise PermanentDatabaseError(f"rows the database cannot take: {type(error).__name__}: {error}") from None
        statement = step_statement(step)
        async with self._db.connection() as conn:
            rows = await conn.fetch(statement.sql, *statement.args(values))
        return Committed(
            owned={RunId(row["id"]): row["age"] for row in rows if row["state"] == "owned"},
            skipped=frozenset(RunId(row["id"]) for row in rows if row["state"] == "skipped"),
        )

    async def compensate(self, leases: Sequence[Lease], tables: frozenset[str]) -> Committed:
        """One statement: mark the runs compensated and delete their rows and outputs, children first."""
        ids, tokens = lease_arrays(leases)
        statement = compensation_statement(tables)
        values = {"run_ids": ids, "tokens": tokens, "worker": self._worker, "step_names": _STEP_NAMES}
        async with self._db.connection() as conn:
            rows = await conn.fetch(statement.sql, *statement.args(values))
        return Committed(
            owned={RunId(row["id"]): row["value"] for row in rows if row["kind"] == "run"},
            rows={row["kind"]: int(row["value"]) for row in rows if row["id"] is None},
            skipped=frozenset(RunId(row["id"]) for row in rows if row["kind"] == "skipped"),
        )

    async def defer_compensations(self, errors: Sequence[tuple[Lease, str]], retry_seconds: float) -> set[RunId]:
        """Give back compensating runs with the reason they are held up; any daemon retries them later."""
        ids, tokens = lease_arrays([lease for lease, _ in errors])
        reasons = [reason for _, reason in errors]
        values = {
            "run_ids": ids,
            "tokens": tokens,
            "worker": self._worker,
            "errors": reasons,
            "retry_seconds": retry_seconds,
        }
        rows = await self._db.fetch(_DEFER_COMPENSATION.sql, *_DEFER_COMPENSATION.args(values))
        return {RunId(row["id"]) for row in rows}
