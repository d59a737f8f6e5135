"""Group commits of steps and compensations: each ONE statement, fenced per run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

from sagad.domain.rows import Committed, Row, StepWrite, Undone
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
        next_step = CASE WHEN l.failure IS NULL THEN $5 + 1 ELSE r.next_step END,
        status = CASE WHEN l.failure IS NOT NULL THEN 'compensating'
                      WHEN $6 THEN 'completed' ELSE 'running' END,
        failed_step = CASE WHEN l.failure IS NOT NULL THEN $7 END,
        last_error = l.failure,
        failed_at = CASE WHEN l.failure IS NOT NULL THEN now() END,
        finished_at = CASE WHEN l.failure IS NULL AND $6 THEN now() END,
        claimed_by = CASE WHEN l.failure IS NULL AND $6 THEN NULL ELSE r.claimed_by END,
        available_at = CASE WHEN l.failure IS NULL AND $6 THEN NULL ELSE r.available_at END,
        updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING l.*, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age, l.failure IS NULL AS ok
"""

# The output's row carries the call's measure and the lease token, for the run's history: no row of
# its own, and no trigger, on the path every run takes five times.
_KEEP_OUTPUTS = """
    INSERT INTO step_outputs (run_id, step, output, call_ms, attempts, retry_reasons, token)
    SELECT a.id, $5, a.output::json, a.call_ms, a.attempts, a.retry_reasons, a.token FROM advanced a WHERE a.ok
    ON CONFLICT DO NOTHING
"""
# A failed call has no output row: its measure goes to the history, in the statement of a batch
# that has failures only (the trigger of migration 0004 records where and why it failed).
_KEEP_FAILED_CALLS = """
    INSERT INTO run_history (run_id, at, event, step, token, attempt, call_ms, retry_reasons)
    SELECT a.id, now(), 'call failed', $7, a.token, a.attempts, a.call_ms, a.retry_reasons
    FROM advanced a WHERE NOT a.ok
"""
# What a step's commit binds, after the fence's: $4 failures ... $11 retry reasons, then the row arrays.
_STEP_PARAMS = (
    *FENCE_PARAMS,
    "failures",
    "step_index",
    "is_last",
    "step_name",
    "outputs",
    "call_ms",
    "attempts",
    "retry_reasons",
)
_HELD_COLUMNS = ", $4::text[], $8::text[], $9::real[], $10::smallint[], $11::text[]"
_HELD_ALIASES = ", failure, output, call_ms, attempts, retry_reasons"
_STEP_FENCE = "r.status = 'running' AND r.next_step = $5"

# A retry after a connection was lost may find its first attempt committed: the run is already
# past this step (or failed at it) under this very lease. It is ours to hand on, not a lost lease.
# Each run of the batch is read by its key (see skipped_leases): joined as tables, the planner
# would scan the batch once per run it found.
_ALREADY_PAST_STEP = """
    SELECT h.id, past.age, 'owned' AS state
    FROM held h CROSS JOIN LATERAL (
        SELECT extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
        FROM workflow_runs r
        WHERE r.id = h.id AND r.lease_token = h.token
          AND ((r.claimed_by = $3 AND (r.next_step > $5 OR (r.status = 'compensating' AND r.failed_step = $7)))
               OR (r.status = 'completed' AND $6))
        LIMIT 1
    ) AS past
"""


_KEEP_OUTPUTS_ONLY = """
    INSERT INTO step_outputs (run_id, step, output)
    SELECT a.id, $5, a.output::json FROM advanced a WHERE a.ok
    ON CONFLICT DO NOTHING
"""


@cache
def step_statement(step: Step, *, with_failures: bool = False, history: bool = True) -> Statement:
    """A step's whole commit as ONE statement (one round trip, atomic without BEGIN/COMMIT).

    The fence and ``_STEP_PARAMS`` advance the runs and keep their outputs (``with_failures``: and
    the failed calls' measures); then one array per column of each table the step writes (named
    ``table.column``), inserted only for the runs the fence let through and that did not fail.
    Each run comes back ``owned`` (written, or found written by an earlier attempt) or ``skipped``
    (another transaction holds its row); a run not returned lost its lease. ``history=False``
    leaves the history out, calls' measures and all: what bench.history_cost compares with.
    """
    if not history:
        parts = [
            locked_leases(_STEP_FENCE, ", $4::text[], $8::text[]", ", failure, output", skip_locked=True),
            f"advanced AS ({_ADVANCE})",
            f"outputs AS ({_KEEP_OUTPUTS_ONLY})",
        ]
        params = list(_STEP_PARAMS[:8])
    else:
        parts = [
            locked_leases(_STEP_FENCE, _HELD_COLUMNS, _HELD_ALIASES, skip_locked=True),
            f"advanced AS ({_ADVANCE})",
            f"outputs AS ({_KEEP_OUTPUTS})",
        ]
        if with_failures:
            parts.append(f"failed_calls AS ({_KEEP_FAILED_CALLS})")
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


# A cancelled run also says how long it waited, from the cancel request to this commit (database time).
_FINISH_COMPENSATION = """
    UPDATE workflow_runs r SET
        status = 'compensated', finished_at = now(), claimed_by = NULL, available_at = NULL,
        compensation_error = NULL, updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING r.id, extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age,
              extract(epoch FROM now() - r.cancel_requested_at)::float8 AS cancel_wait, r.lease_token AS token
"""

# As for steps: a retry may find the first attempt's commit done, under this very lease.
_ALREADY_COMPENSATED = """
    SELECT 'run', h.id, done.age, NULL::float8
    FROM held h CROSS JOIN LATERAL (
        SELECT extract(epoch FROM clock_timestamp() - r.submitted_at)::float8 AS age
        FROM workflow_runs r
        WHERE r.id = h.id AND r.lease_token = h.token AND r.status = 'compensated'
        LIMIT 1
    ) AS done
"""
_COMPENSATION_FENCE = "r.status = 'compensating'"
_DELETE_OUTPUTS = """
    DELETE FROM step_outputs WHERE run_id = ANY(ARRAY(SELECT id FROM finished))
    RETURNING run_id, step, created_at, call_ms, attempts, retry_reasons, token
"""
# A compensated run's history keeps when each of its steps committed, and its call, which its outputs
# said until now.
_KEEP_COMMITS = """
    INSERT INTO run_history (run_id, at, event, step, token, attempt, call_ms, retry_reasons)
    SELECT run_id, created_at, 'committed', ($4::text[])[step + 1], token, attempts, call_ms, retry_reasons
    FROM delete_step_outputs
"""
# What each step's undo came to (passed by the relays through the compensator), for the runs finished.
_KEEP_UNDOS = """
    INSERT INTO run_history (run_id, at, event, step, worker, token, attempt, call_ms, retry_reasons, detail)
    SELECT u.run_id, now(), 'undo', u.step, $3, f.token, u.attempts, u.call_ms, u.retry_reasons, u.outcome
    FROM unnest($5::uuid[], $6::text[], $7::text[], $8::int[], $9::real[], $10::text[])
         AS u(run_id, step, outcome, attempts, call_ms, retry_reasons)
    JOIN finished f ON f.id = u.run_id
"""
# The rows deleted per table of each run (zeros left out), one 'deleted' event per run finished.
_KEEP_DELETIONS = """
    INSERT INTO run_history (run_id, at, event, worker, token, rows)
    SELECT f.id, now(), 'deleted', $3, f.token,
           coalesce(jsonb_object_agg(d.name, d.n) FILTER (WHERE d.name IS NOT NULL), '{}')
    FROM finished f LEFT JOIN deleted_per_run d ON d.run_id = f.id
    GROUP BY f.id, f.token
"""
_DOOMED = "ARRAY(SELECT id FROM finished)"
_STEP_NAMES = list(STEP_NAMES)
_COMPENSATION_PARAMS = (
    *FENCE_PARAMS,
    "step_names",
    "undo_run_ids",
    "undo_steps",
    "undo_outcomes",
    "undo_attempts",
    "undo_call_ms",
    "undo_retry_reasons",
)


@cache
def compensation_statement(tables: frozenset[str], *, history: bool = True) -> Statement:
    """A compensation of many runs as ONE statement: mark them compensated and delete all their rows.

    The deletes come children first; PostgreSQL checks the foreign keys at the end of the
    statement, when every row of the runs is gone. The run's history keeps its steps' commits, its
    undos and the rows deleted per table. Rows come back as (kind, run id, value, cancel wait):
    ``run`` with the run's age (and, for a cancelled run, the seconds since its cancel request) for
    each run finished (or found finished by an earlier attempt), ``skipped`` for a run whose row
    another transaction holds, and one row per table with the number of rows deleted from it.
    ``history=False`` leaves the history out (and counts the rows per table only): what
    bench.history_cost compares with.
    """
    if not history:
        return _compensation_without_history(tables)
    parts = [
        locked_leases(_COMPENSATION_FENCE, skip_locked=True),
        f"finished AS ({_FINISH_COMPENSATION})",
    ]
    deleted = []
    for table in children_first(tables):
        parts.append(f"delete_{table} AS ({delete_statement(table, _DOOMED)})")
        deleted.append(f"SELECT '{table}' AS name, run_id FROM delete_{table}")
    per_run = (
        f"SELECT name, run_id, count(*) AS n FROM ({' UNION ALL '.join(deleted)}) AS d GROUP BY name, run_id"
        if deleted
        else "SELECT NULL::text AS name, NULL::uuid AS run_id, 0::bigint AS n WHERE false"
    )
    parts += [
        f"deleted_per_run AS ({per_run})",
        f"delete_step_outputs AS ({_DELETE_OUTPUTS})",
        f"kept_commits AS ({_KEEP_COMMITS})",
        f"kept_undos AS ({_KEEP_UNDOS})",
        f"kept_deletions AS ({_KEEP_DELETIONS})",
    ]
    sql = (
        f"WITH {', '.join(parts)} SELECT 'run' AS kind, id, age AS value, cancel_wait FROM finished "
        f"UNION ALL {_ALREADY_COMPENSATED} "
        f"UNION ALL SELECT 'skipped', id, 0::float8, NULL FROM ({skipped_leases(_COMPENSATION_FENCE)}) AS s "
        "UNION ALL SELECT name, NULL::uuid, sum(n)::float8, NULL FROM deleted_per_run GROUP BY name "
        "UNION ALL SELECT 'step_outputs', NULL::uuid, count(*)::float8, NULL FROM delete_step_outputs"
    )
    return Statement(sql, _COMPENSATION_PARAMS)


def _compensation_without_history(tables: frozenset[str]) -> Statement:
    parts = [locked_leases(_COMPENSATION_FENCE, skip_locked=True), f"finished AS ({_FINISH_COMPENSATION})"]
    counts = []
    for table in children_first(tables):
        parts.append(f"delete_{table} AS ({delete_statement(table, _DOOMED)})")
        counts.append(f"SELECT '{table}', NULL::uuid, count(*)::float8, NULL FROM delete_{table}")
    parts.append(f"delete_step_outputs AS ({_DELETE_OUTPUTS})")
    counts.append("SELECT 'step_outputs', NULL::uuid, count(*)::float8, NULL FROM delete_step_outputs")
    sql = (
        f"WITH {', '.join(parts)} SELECT 'run' AS kind, id, age AS value, cancel_wait FROM finished "
        f"UNION ALL {_ALREADY_COMPENSATED} "
        f"UNION ALL SELECT 'skipped', id, 0::float8, NULL FROM ({skipped_leases(_COMPENSATION_FENCE)}) AS s "
        f"UNION ALL {' UNION ALL '.join(counts)}"
    )
    return Statement(sql, FENCE_PARAMS)


# An undo that keeps failing: the run stays compensating, given back with the reason, to be
# tried again (by any daemon) once ``available_at`` comes.
_DEFER_COMPENSATION = Statement(
    f"""
    WITH {locked_leases(_COMPENSATION_FENCE, ", $4::text[]", ", error")}
    UPDATE workflow_runs r SET
        compensation_error = l.error, claimed_by = NULL,
        available_at = now() + make_interval(secs => $5), updated_at = now()
    FROM locked l
    WHERE r.id = l.id
    RETURNING r.id
""",
    (*FENCE_PARAMS, "errors", "retry_seconds"),
)


class StepStore:
    """Writes a step's rows, or deletes a failed run's rows, for a batch of runs at once."""

    def __init__(self, db: Database, worker: WorkerId, *, keeps_history: bool = True) -> None:
        self._db = db
        self._worker = worker
        self._history = keeps_history
        """False only to measure what the history costs (bench.history_cost)."""

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
        if self._history:
            values["call_ms"] = [w.call_seconds * 1000 for w in writes]
            values["attempts"] = [w.attempts for w in writes]
            values["retry_reasons"] = [w.retry_reasons for w in writes]
        try:
            for written in tables_of_step(step):
                name = written.name
                arrays = column_arrays(name, by_table[name])
                values.update(zip((f"{name}.{column}" for column in written_columns(name)), arrays, strict=True))
        except (KeyError, TypeError, ValueError) as error:  # a row missing a column, or a value JSON cannot hold
            raise PermanentDatabaseError(f"rows the database cannot take: {type(error).__name__}: {error}") from None
        with_failures = any(failure is not None for failure in failures)
        statement = step_statement(step, with_failures=with_failures, history=self._history)
        async with self._db.connection() as conn:
            rows = await conn.fetch(statement.sql, *statement.args(values))
        return Committed(
            owned={RunId(row["id"]): row["age"] for row in rows if row["state"] == "owned"},
            skipped=frozenset(RunId(row["id"]) for row in rows if row["state"] == "skipped"),
        )

    async def compensate(
        self, leases: Sequence[Lease], tables: frozenset[str], undone: Sequence[tuple[RunId, Undone]] = ()
    ) -> Committed:
        """One statement: mark the runs compensated and delete their rows and outputs, children first.

        ``undone`` (what the undos of each run came to) goes to the history of the runs finished.
        """
        ids, tokens = lease_arrays(leases)
        statement = compensation_statement(tables, history=self._history)
        values: dict[str, object] = {"run_ids": ids, "tokens": tokens, "worker": self._worker}
        if self._history:
            values |= {
                "step_names": _STEP_NAMES,
                "undo_run_ids": [run_id for run_id, _ in undone],
                "undo_steps": [undo.step.value for _, undo in undone],
                "undo_outcomes": [undo.outcome for _, undo in undone],
                "undo_attempts": [undo.attempts if undo.ran else None for _, undo in undone],
                "undo_call_ms": [undo.seconds * 1000 if undo.ran else None for _, undo in undone],
                "undo_retry_reasons": [undo.retry_reasons for _, undo in undone],
            }
        async with self._db.connection() as conn:
            rows = await conn.fetch(statement.sql, *statement.args(values))
        return Committed(
            owned={RunId(row["id"]): row["value"] for row in rows if row["kind"] == "run"},
            rows={
                **dict.fromkeys((*tables, "step_outputs"), 0),
                **{row["kind"]: int(row["value"]) for row in rows if row["id"] is None},
            },
            skipped=frozenset(RunId(row["id"]) for row in rows if row["kind"] == "skipped"),
            cancel_waits={RunId(row["id"]): row["cancel_wait"] for row in rows if row["cancel_wait"] is not None},
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
