"""What operators and clients ask of runs: show, list, cancel, retry, resume, and the fleet's intake."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from sagad.domain.operations import (
    CANCEL_PREFIX,
    CancelOutcome,
    CancelResult,
    HistoryEvent,
    IntakeState,
    RetryOutcome,
    RetryResult,
    Run,
    RunFilter,
)
from sagad.domain.runs import RunId, RunStatus, new_run_id
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import STEP_NAMES_BOUND, SUBMITTED_CHANNEL

FINISHED_CHANNEL = "sagad_finished"
"""Where migration 0003's trigger announces each run that reaches a terminal state (payload: its id)."""

_RUN_COLUMNS = """
    r.id, r.status, r.next_step, r.failed_step, r.attempts, r.last_error, r.compensation_error, r.claimed_by,
    r.lease_token, r.idempotency_key, r.submitted_at, r.started_at, r.failed_at, r.finished_at,
    CASE WHEN r.claimed_by IS NOT NULL THEN r.available_at END AS lease_expires_at,
    r.retry_of, (SELECT c.id FROM workflow_runs c WHERE c.retry_of = r.id) AS retried_by,
    r.cancel_requested_at, r.cancel_reason, r.cancelled_by
"""

_SHOW = f"SELECT {_RUN_COLUMNS} FROM workflow_runs r WHERE r.id = $1"

# Locks each run chosen (the runs named, or a page of a filter's), then: pending, never claimed ->
# compensated here, at once (it wrote nothing); running -> marked, and its holder's next renewal (or
# the next claim, if its holder is gone) sends it backward. Every chosen run is answered: one whose row
# another transaction held (a step's commit, a compensation, a renewal) has no status, and is cancelled
# by a second statement that waits for it; waiting in id order in the first, one held row held up all.
# $1 reason, $2 by, $3 the reason's prefix, $4 the step names; the chosen runs' own arguments follow.
_CANCEL_LOCKED = """
    target AS (
        SELECT r.id, r.status, r.cancel_requested_at IS NOT NULL AS marked
        FROM workflow_runs r WHERE r.id = ANY(ARRAY(SELECT id FROM chosen))  -- along the key, however many rows
        ORDER BY r.id
        FOR NO KEY UPDATE"""
_CANCEL_CHANGES = """
    ),
    changed AS (
        UPDATE workflow_runs r SET
            status = CASE WHEN t.status = 'pending' THEN 'compensated' ELSE r.status END,
            available_at = CASE WHEN t.status = 'pending' THEN NULL ELSE r.available_at END,
            finished_at = CASE WHEN t.status = 'pending' THEN now() ELSE r.finished_at END,
            failed_at = CASE WHEN t.status = 'pending' THEN now() ELSE r.failed_at END,
            last_error = CASE WHEN t.status = 'pending' THEN $3 || $1 ELSE r.last_error END,
            -- Where it stopped: a compensated run always names a step (the audit holds it to that).
            failed_step = CASE WHEN t.status = 'pending' THEN ($4::text[])[r.next_step + 1] ELSE r.failed_step END,
            cancel_requested_at = now(), cancel_reason = $1, cancelled_by = $2, updated_at = now()
        FROM target t
        WHERE r.id = t.id AND t.status IN ('pending', 'running') AND NOT t.marked
        RETURNING r.id
    )
    SELECT c.id, t.status, t.marked, c.id IN (SELECT id FROM changed) AS changed
    FROM chosen c LEFT JOIN target t ON t.id = c.id
"""
_NAMED = "WITH chosen AS (SELECT unnest($5::uuid[]) AS id),"
_CANCEL_FREE = f"{_NAMED} {_CANCEL_LOCKED} SKIP LOCKED {_CANCEL_CHANGES}"
_CANCEL_HELD = f"{_NAMED} {_CANCEL_LOCKED} {_CANCEL_CHANGES}"

# A new run per compensated run, with the same brief, linked to it; a run retried before keeps its
# first retry (the unique retry_of), which the statement after this one reads.
_RETRY = """
    WITH asked AS (
        SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS a(id, new_id)
    ),
    source AS (
        SELECT a.id, a.new_id, r.status, r.brief FROM asked a JOIN workflow_runs r ON r.id = a.id
    ),
    created AS (
        INSERT INTO workflow_runs (id, brief, retry_of)
        SELECT s.new_id, s.brief, s.id FROM source s WHERE s.status = 'compensated'
        ON CONFLICT (retry_of) DO NOTHING
        RETURNING id, retry_of, pg_notify($3, '')::text AS notified
    )
    SELECT s.id, s.status, c.id AS created FROM source s LEFT JOIN created c ON c.retry_of = s.id
"""

_RETRIED_BY = "SELECT retry_of, id FROM workflow_runs WHERE retry_of = ANY($1::uuid[])"

# A compensation held up by a failing undo is tried again now rather than after its delay; one
# still held by a live daemon is left alone (it is being tried).
_RESUME = """
    UPDATE workflow_runs r SET available_at = now(), updated_at = now()
    WHERE r.id = ANY($1::uuid[]) AND r.status = 'compensating' AND r.compensation_error IS NOT NULL
      AND r.claimed_by IS NULL AND r.available_at > now()
    RETURNING r.id
"""

_EXISTING = "SELECT id FROM workflow_runs WHERE id = ANY($1::uuid[])"

# What the trigger of migration 0004 recorded, with what the run already says: a step's commit is its
# output's creation, with its call's measure and lease token (kept until a compensation moves them here),
# a completion the run's end. A commit's daemon is the one whose claim has its token.
_HISTORY = """
    SELECT h.at, h.event, h.step, h.token, h.attempt, h.detail, h.call_ms, h.retry_reasons, h.rows,
           coalesce(h.worker, CASE WHEN h.event IN ('committed', 'call failed') THEN (
               SELECT c.worker FROM run_history c
               WHERE c.run_id = $1 AND c.event = 'claimed' AND c.token = h.token LIMIT 1
           ) END) AS worker
    FROM (
        SELECT at, event, step, worker, token, attempt, detail, call_ms, retry_reasons, rows
        FROM run_history WHERE run_id = $1
        UNION ALL
        SELECT o.created_at, 'committed', ($3::text[])[o.step + 1], NULL, o.token, o.attempts, NULL, o.call_ms,
               o.retry_reasons, NULL
        FROM step_outputs o WHERE o.run_id = $1
        UNION ALL
        SELECT r.finished_at, 'completed', NULL, NULL, r.lease_token, r.attempts, NULL, NULL, NULL, NULL
        FROM workflow_runs r WHERE r.id = $1 AND r.status = 'completed'
    ) h
    ORDER BY h.at, CASE h.event WHEN 'retry' THEN 0 WHEN 'cancel requested' THEN 1 WHEN 'claimed' THEN 2
                                WHEN 'committed' THEN 3 WHEN 'call failed' THEN 4 WHEN 'failed' THEN 5
                                WHEN 'undo held up' THEN 6 WHEN 'undo' THEN 7 WHEN 'deleted' THEN 8 ELSE 9 END
    LIMIT $2
"""

# Run ids are ordered by time (UUIDv7): the history of runs submitted before a moment is a key range.
_PRUNE_HISTORY = """
    DELETE FROM run_history WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM run_history WHERE run_id < $1::uuid LIMIT $2
    ))
"""

_INTAKE = "SELECT paused, changed_at, changed_by, reason FROM sagad_intake WHERE id = 1"

_SET_INTAKE = """
    UPDATE sagad_intake SET paused = $1, changed_at = now(), changed_by = $2, reason = $3
    WHERE id = 1
    RETURNING paused, changed_at, changed_by, reason
"""


def id_floor(moment: datetime) -> uuid.UUID:
    """The smallest run id (UUIDv7) of a run submitted at ``moment``: time windows become id ranges."""
    millis = max(0, int(moment.timestamp() * 1000))
    return uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list (or count) statement and its bound arguments, in the order of their numbers."""

    sql: str
    args: tuple[Any, ...]


class _Bound:
    """The values bound to a statement, in the order of their numbers."""

    def __init__(self, *leading: Any) -> None:
        self.values = list(leading)

    def placeholder(self, value: Any, cast: str) -> str:
        """Binds ``value``; its placeholder (``$n::cast``) for the statement's text."""
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def _matching(where: RunFilter, cursor: RunId | None, arg: Callable[[Any, str], str]) -> str:
    """The condition on ``workflow_runs r`` that ``where`` (and the cursor) asks for; values bound by ``arg``.

    Every value is bound: ``p`` and ``q`` below are placeholders (``$n::type``), never values.
    """
    conditions: list[str] = []
    if where.statuses:
        p = arg(sorted(s.value for s in where.statuses), "text[]")
        conditions.append(f"r.status = ANY({p})")
    if where.step is not None:
        p, q = arg(where.step.index, "smallint"), arg(where.step.value, "text")
        conditions.append(f"((r.status IN ('pending', 'running') AND r.next_step = {p}) OR r.failed_step = {q})")
    if where.since is not None:
        p, q = arg(id_floor(where.since), "uuid"), arg(where.since, "timestamptz")
        conditions.append(f"r.id >= {p} AND r.submitted_at >= {q}")
    if where.until is not None:
        p, q = arg(id_floor(where.until), "uuid"), arg(where.until, "timestamptz")
        conditions.append(f"r.id < {p} AND r.submitted_at < {q}")
    if where.error_contains is not None:
        p = arg(where.error_contains, "text")
        conditions.append(f"strpos(lower(r.last_error), lower({p})) > 0")
    if where.waiting_on_undo:
        conditions.append("r.status = 'compensating' AND r.compensation_error IS NOT NULL")
    if where.cancelled:
        conditions.append("r.cancel_requested_at IS NOT NULL")
    if cursor is not None:
        p = arg(cursor, "uuid")
        conditions.append(f"r.id < {p}")
    return " AND ".join(conditions) or "true"


def list_query(where: RunFilter, *, cursor: RunId | None, limit: int, count: bool = False) -> ListQuery:
    """The statement listing (or counting) the runs ``where`` matches, newest first, and its arguments.

    Run ids grow with time (UUIDv7), so newest first is the primary key read backwards, a time
    window an id range on it, and the cursor (the last id of the page before) a bound on it: runs
    added while an operator pages come before the first page, never between pages.
    """
    bound = _Bound()
    condition = _matching(where, cursor, bound.placeholder)
    if count:
        return ListQuery(f"SELECT count(*) AS n FROM workflow_runs r WHERE {condition}", tuple(bound.values))
    p = bound.placeholder(limit, "int")
    return ListQuery(
        f"SELECT {_RUN_COLUMNS} FROM workflow_runs r WHERE {condition} ORDER BY r.id DESC LIMIT {p}",
        tuple(bound.values),
    )


def cancel_page_query(where: RunFilter, *, cursor: RunId | None, limit: int, reason: str, by: str) -> ListQuery:
    """One statement that chooses a page of the runs ``where`` matches (as ``list_query`` pages them) and
    cancels those no other transaction holds; the held ones come back without a status."""
    bound = _Bound(reason, by, CANCEL_PREFIX, STEP_NAMES_BOUND)
    condition = _matching(where, cursor, bound.placeholder)
    p = bound.placeholder(limit, "int")
    chosen = f"WITH chosen AS (SELECT r.id FROM workflow_runs r WHERE {condition} ORDER BY r.id DESC LIMIT {p}),"
    return ListQuery(f"{chosen} {_CANCEL_LOCKED} SKIP LOCKED {_CANCEL_CHANGES}", tuple(bound.values))


@dataclass(frozen=True, slots=True)
class CancelPage:
    """What a page of a cancel by filter did: the runs it cancelled, those it passed over (their rows
    held by another transaction: cancel them by id, later), and the cursor of the next page."""

    results: list[CancelResult]
    held: list[RunId]
    next_cursor: RunId | None


def _run(row: asyncpg.Record) -> Run:
    status = RunStatus(row["status"])
    step = row["next_step"]
    at_step = status in (RunStatus.PENDING, RunStatus.RUNNING) and step < len(Step)
    return Run(
        run_id=RunId(row["id"]),
        status=status,
        current_step=Step.at(step).value if at_step else None,
        failed_step=row["failed_step"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        compensation_error=row["compensation_error"],
        claimed_by=row["claimed_by"],
        lease_token=row["lease_token"],
        idempotency_key=row["idempotency_key"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        failed_at=row["failed_at"],
        finished_at=row["finished_at"],
        lease_expires_at=row["lease_expires_at"],
        retry_of=None if row["retry_of"] is None else RunId(row["retry_of"]),
        retried_by=None if row["retried_by"] is None else RunId(row["retried_by"]),
        cancel_requested_at=row["cancel_requested_at"],
        cancel_reason=row["cancel_reason"],
        cancelled_by=row["cancelled_by"],
    )


def _cancel_outcome(row: asyncpg.Record) -> CancelOutcome:
    status = RunStatus(row["status"])
    if status is RunStatus.PENDING:
        return CancelOutcome.COMPENSATED if row["changed"] else CancelOutcome.ALREADY_REQUESTED
    if status is RunStatus.RUNNING:
        return CancelOutcome.REQUESTED if row["changed"] else CancelOutcome.ALREADY_REQUESTED
    if status is RunStatus.COMPENSATING:
        return CancelOutcome.ALREADY_COMPENSATING
    if status is RunStatus.COMPENSATED:
        return CancelOutcome.ALREADY_COMPENSATED
    return CancelOutcome.REFUSED_COMPLETED


def _intake(row: asyncpg.Record) -> IntakeState:
    return IntakeState(row["paused"], row["changed_at"], row["changed_by"], row["reason"])


class OperationsStore:
    """The operator's reads and writes of runs; each is one statement (a retry of known runs, two)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def show(self, run_id: RunId) -> Run | None:
        rows = await self._db.fetch(_SHOW, run_id)
        return _run(rows[0]) if rows else None

    async def list_runs(self, where: RunFilter, *, cursor: RunId | None, limit: int) -> list[Run]:
        built = list_query(where, cursor=cursor, limit=limit)
        return [_run(row) for row in await self._db.fetch(built.sql, *built.args)]

    async def count(self, where: RunFilter) -> int:
        built = list_query(where, cursor=None, limit=0, count=True)
        rows = await self._db.fetch(built.sql, *built.args)
        return int(rows[0]["n"])

    async def missing(self, run_ids: Sequence[RunId]) -> list[RunId]:
        """Of these ids, the ones no run has."""
        found = {row["id"] for row in await self._db.fetch(_EXISTING, list(run_ids))}
        return [run_id for run_id in run_ids if run_id not in found]

    async def cancel(self, run_ids: Sequence[RunId], reason: str, by: str) -> list[CancelResult]:
        """Cancel these runs: first those no other transaction holds, then, waiting, the rest.

        Runs that do not exist are left out of the answer.
        """
        args = (reason, by, CANCEL_PREFIX, STEP_NAMES_BOUND)
        rows = await self._db.fetch(_CANCEL_FREE, *args, list(run_ids))
        held = [row["id"] for row in rows if row["status"] is None]
        if held:
            rows = [row for row in rows if row["status"] is not None]
            rows += await self._db.fetch(_CANCEL_HELD, *args, held)
        return [CancelResult(RunId(row["id"]), _cancel_outcome(row)) for row in rows if row["status"] is not None]

    async def cancel_page(
        self, where: RunFilter, *, cursor: RunId | None, limit: int, reason: str, by: str
    ) -> CancelPage:
        """Cancel a page of the runs ``where`` matches, newest first after ``cursor``, passing over held rows."""
        built = cancel_page_query(where, cursor=cursor, limit=limit, reason=reason, by=by)
        rows = await self._db.fetch(built.sql, *built.args)
        return CancelPage(
            results=[CancelResult(RunId(row["id"]), _cancel_outcome(row)) for row in rows if row["status"] is not None],
            held=[RunId(row["id"]) for row in rows if row["status"] is None],
            next_cursor=RunId(min(row["id"] for row in rows)) if len(rows) == limit else None,
        )

    async def retry(self, run_ids: Sequence[RunId]) -> list[RetryResult]:
        """Retry these compensated runs as new runs (once each); runs that do not exist are left out."""
        new_ids = [new_run_id() for _ in run_ids]
        rows = await self._db.fetch(_RETRY, list(run_ids), new_ids, SUBMITTED_CHANNEL)
        again = [row["id"] for row in rows if row["created"] is None and row["status"] == "compensated"]
        earlier: dict[uuid.UUID, uuid.UUID] = {}
        if again:
            earlier = {row["retry_of"]: row["id"] for row in await self._db.fetch(_RETRIED_BY, again)}
        results = []
        for row in rows:
            run_id = RunId(row["id"])
            if row["created"] is not None:
                results.append(RetryResult(run_id, RetryOutcome.CREATED, RunId(row["created"])))
            elif row["id"] in earlier:
                results.append(RetryResult(run_id, RetryOutcome.ALREADY_RETRIED, RunId(earlier[row["id"]])))
            else:
                results.append(RetryResult(run_id, RetryOutcome.REFUSED_NOT_COMPENSATED, None))
        return results

    async def resume(self, run_ids: Sequence[RunId]) -> set[RunId]:
        """Of these runs waiting on a failed undo, the ones made claimable now."""
        return {RunId(row["id"]) for row in await self._db.fetch(_RESUME, list(run_ids))}

    async def history(self, run_id: RunId, limit: int) -> list[HistoryEvent]:
        rows = await self._db.fetch(_HISTORY, run_id, limit, STEP_NAMES_BOUND)
        return [
            HistoryEvent(
                at=row["at"],
                event=row["event"],
                step=row["step"],
                worker=row["worker"],
                token=row["token"],
                attempt=row["attempt"],
                detail=row["detail"],
                call_ms=row["call_ms"],
                retry_reasons=row["retry_reasons"],
                rows=row["rows"],
            )
            for row in rows
        ]

    async def prune_history(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` history events of runs submitted before ``before``; how many went."""
        async with self._db.connection() as conn:
            status = await conn.execute(_PRUNE_HISTORY, id_floor(before), limit)
        return int(status.split()[-1])

    async def intake(self) -> IntakeState:
        [row] = await self._db.fetch(_INTAKE)
        return _intake(row)

    async def set_intake(self, paused: bool, by: str, reason: str | None) -> IntakeState:
        [row] = await self._db.fetch(_SET_INTAKE, paused, by, reason)
        return _intake(row)
