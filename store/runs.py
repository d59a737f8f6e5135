"""Runs and their leases: submit, claim, renew, release, and read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from sagad.domain.db_operations import Operation
from sagad.domain.operations import CANCEL_PREFIX
from sagad.domain.runs import (
    TERMINAL,
    ClaimedRun,
    Lease,
    LeaseToken,
    Renewal,
    RunId,
    RunStatus,
    StatusSample,
    WorkerId,
    new_run_id,
)
from sagad.domain.steps import STEP_NAMES, Step
from sagad.errors import PermanentDatabaseError
from sagad.store.db import Database
from sagad.store.fence import lease_arrays, locked_leases
from sagad.store.records import RunEnd

SUBMITTED_CHANNEL = "sagad_submitted"

STEP_NAMES_BOUND = list(STEP_NAMES)
"""Bound (never spliced) where a statement names the step a run is at: ``($n::text[])[r.next_step + 1]``."""

# One statement, so one round trip and atomic alone. The notification goes out at commit, once
# however many rows asked for it (PostgreSQL folds identical notifications of a transaction).
_SUBMIT = """
    INSERT INTO workflow_runs (id, idempotency_key, brief)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]::jsonb[])
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, pg_notify($4, '')::text AS notified
"""

# Read after the insert's commit, so it also sees a run that a concurrent submission with the same
# key committed while the insert ran.
_BY_KEY = "SELECT idempotency_key, id FROM workflow_runs WHERE idempotency_key = ANY($1::text[])"

# A running run whose cancel was asked for (its holder died or froze before it could act) is claimed
# as compensating: the claimer routes it backward, its undos run, then the one DELETE.
_CANCELLED = "r.cancel_requested_at IS NOT NULL AND r.status = 'running'"

# While intake is paused (sagad_intake, read once per claim), pending runs stay where they are;
# runs already started, abandoned ones included, are still claimed and finished.
_CLAIM = f"""
    WITH candidates AS (
        SELECT id FROM workflow_runs
        WHERE available_at <= now()
          AND (status <> 'pending' OR NOT (SELECT paused FROM sagad_intake WHERE id = 1))
        ORDER BY available_at
        LIMIT $2
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE workflow_runs r SET
        status = CASE WHEN {_CANCELLED} THEN 'compensating' WHEN r.status = 'pending' THEN 'running'
                      ELSE r.status END,
        failed_step = CASE WHEN {_CANCELLED} THEN ($4::text[])[r.next_step + 1] ELSE r.failed_step END,
        failed_at = CASE WHEN {_CANCELLED} THEN now() ELSE r.failed_at END,
        last_error = CASE WHEN {_CANCELLED} THEN $5 || r.cancel_reason ELSE r.last_error END,
        claimed_by = $1,
        lease_token = r.lease_token + 1,
        attempts = r.attempts + 1,
        available_at = now() + make_interval(secs => $3),
        started_at = coalesce(r.started_at, now()),
        updated_at = now()
    FROM candidates c
    WHERE r.id = c.id
    RETURNING r.id, r.lease_token, r.status, r.next_step, r.failed_step, r.last_error, r.brief::text AS brief,
              r.attempts, r.retry_of,
              (SELECT json_object_agg(o.step, o.output) FROM step_outputs o WHERE o.run_id = r.id) AS outputs
"""

# The outputs of runs a claim read too early: see RunStore.claim.
_OUTPUTS = """
    SELECT o.run_id, json_object_agg(o.step, o.output) AS outputs
    FROM step_outputs o WHERE o.run_id = ANY($1::uuid[])
    GROUP BY o.run_id
"""

# Runs this worker holds that it does not know of: a claim that committed but whose answer was lost.
# Only unexpired leases: an expired one may be taken by any daemon, this one included, by a claim.
_UNANSWERED = """
    SELECT r.id, r.lease_token, r.status, r.next_step, r.failed_step, r.last_error, r.brief::text AS brief,
           r.attempts, r.retry_of,
           (SELECT json_object_agg(o.step, o.output) FROM step_outputs o WHERE o.run_id = r.id) AS outputs
    FROM workflow_runs r
    WHERE r.available_at > now() AND r.claimed_by = $1 AND NOT (r.id = ANY($2::uuid[]))
"""

# Skip what is locked: a row held by a stuck statement (ours or anyone's) must not hold up the renewal
# of every other lease; a skipped run simply is not renewed this tick.
# A run whose cancel was asked for is not renewed but given back as compensating (no longer ours:
# every write of this daemon for it is fenced off); the renewer drops it, which cancels its call in
# flight, and the next claim (any daemon's) sends it backward. Not before a grace of a tenth of the
# lease (at most a second): no other daemon may run the undos while that call is still unwinding.
_RENEW = f"""
    WITH {locked_leases("r.status IN ('running', 'compensating')", skip_locked=True)}
    UPDATE workflow_runs r SET
        available_at = now() + make_interval(secs => CASE WHEN {_CANCELLED} THEN least($4 / 10, 1.0) ELSE $4 END),
        status = CASE WHEN {_CANCELLED} THEN 'compensating' ELSE r.status END,
        failed_step = CASE WHEN {_CANCELLED} THEN ($5::text[])[r.next_step + 1] ELSE r.failed_step END,
        failed_at = CASE WHEN {_CANCELLED} THEN now() ELSE r.failed_at END,
        last_error = CASE WHEN {_CANCELLED} THEN $6 || r.cancel_reason ELSE r.last_error END,
        claimed_by = CASE WHEN {_CANCELLED} THEN NULL ELSE r.claimed_by END
    FROM locked l WHERE r.id = l.id
    RETURNING r.id, r.claimed_by IS NULL AS cancelled
"""

# Skip what is locked: one stuck row must not keep a stopping daemon from giving back the rest.
_RELEASE = f"""
    WITH {locked_leases("r.status IN ('running', 'compensating')", skip_locked=True)}
    UPDATE workflow_runs r SET claimed_by = NULL, available_at = now(), updated_at = now()
    FROM locked l WHERE r.id = l.id
    RETURNING r.id
"""

# At start: runs a previous life of this worker still holds (it was killed, or lost its connection).
# No SKIP LOCKED: a statement of that life still running on the server ends within its time limit.
# (available_at IS NOT NULL: the unfinished runs, along the partial index.)
_RELEASE_ALL = """
    UPDATE workflow_runs SET claimed_by = NULL, available_at = now(), updated_at = now()
    WHERE available_at IS NOT NULL AND claimed_by = $1 AND status IN ('running', 'compensating')
    RETURNING id
"""

# A run finished under this lease keeps its token; a newer claim always has a higher one.
_TAKEN_OVER = """
    SELECT r.id FROM workflow_runs r JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, token) ON h.id = r.id
    WHERE r.lease_token <> h.token
       OR (r.status IN ('running', 'compensating') AND r.claimed_by IS DISTINCT FROM $3)
"""

# Each run by its key (LIMIT 1 keeps the lookup a subquery of its own, run once per id): with
# ``id = ANY($1)`` the planner could go by the status index and search the whole array for each
# finished run, 680 ms a poll of 10,000 ids in a run of 20,000.
_ENDS = """
    SELECT r.id, r.status, extract(epoch FROM r.submitted_at)::float8 AS submitted,
           extract(epoch FROM r.finished_at)::float8 AS finished, extract(epoch FROM r.failed_at)::float8 AS failed
    FROM unnest($1::uuid[]) AS w(id)
    CROSS JOIN LATERAL (
        SELECT * FROM workflow_runs r WHERE r.id = w.id AND r.status IN ('completed', 'compensated') LIMIT 1
    ) AS r
"""

_COUNTS = """
    SELECT status, count(*) AS n FROM workflow_runs GROUP BY status
"""

# Unfinished runs are exactly those in the partial index on available_at: counting them reads the
# backlog, however many finished runs the table holds.
_IN_FLIGHT = """
    SELECT status, count(*) AS n FROM workflow_runs WHERE available_at IS NOT NULL GROUP BY status
"""

_FINISHED_COUNTS = """
    SELECT status, count(*) AS n FROM workflow_runs WHERE available_at IS NULL GROUP BY status
"""
EXACT_BELOW = 50_000
"""Runs (as the server's statistics estimate them) below which the sampler counts finished runs exactly."""

# Above EXACT_BELOW, finished runs are estimated, never counted: the live rows the server's statistics keep for the
# table (updated as transactions end), split by the status frequencies of its last ANALYZE.
_ESTIMATES = """
    SELECT coalesce(
               (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'workflow_runs'::regclass), 0
           )::bigint AS live,
           coalesce((
               SELECT jsonb_object_agg(s.status, s.frequency)
               FROM pg_stats st,
                    unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS s(status, frequency)
               WHERE st.schemaname = current_schema() AND st.tablename = 'workflow_runs' AND st.attname = 'status'
           ), '{}'::jsonb) AS frequencies,
           coalesce((SELECT paused FROM sagad_intake WHERE id = 1), false) AS intake_paused,
           cancels.waiting AS cancels_waiting, cancels.oldest AS oldest_cancel_seconds
    FROM (
        -- Cancels asked for and not yet carried out: unfinished runs only (the available_at index).
        SELECT count(*) AS waiting, coalesce(extract(epoch FROM now() - min(cancel_requested_at)), 0)::float8 AS oldest
        FROM workflow_runs WHERE available_at IS NOT NULL AND cancel_requested_at IS NOT NULL
    ) AS cancels
"""

_OVERDUE = """
    SELECT count(*) FROM workflow_runs
    WHERE claimed_by IS NOT NULL AND available_at < now() - make_interval(secs => $1)
"""


def _operations(estimates: asyncpg.Record) -> dict[str, Any]:
    """The sample's view of what operators did: intake, and cancels not yet carried out."""
    return {
        "intake_paused": estimates["intake_paused"],
        "cancels_waiting": int(estimates["cancels_waiting"]),
        "oldest_cancel_seconds": float(estimates["oldest_cancel_seconds"]),
    }


def _claimed_runs(rows: Sequence[asyncpg.Record]) -> list[ClaimedRun]:
    return [
        ClaimedRun(
            lease=Lease(RunId(row["id"]), LeaseToken(row["lease_token"])),
            status=RunStatus(row["status"]),
            next_step=Step.at(row["next_step"]),
            failed_step=None if row["failed_step"] is None else Step(row["failed_step"]),
            last_error=row["last_error"],
            brief=row["brief"],
            attempts=row["attempts"],
            retry_of=None if row["retry_of"] is None else RunId(row["retry_of"]),
            outputs={Step.at(int(index)): output for index, output in (row["outputs"] or {}).items()},
        )
        for row in rows
    ]


class RunStore:
    """Reads and writes ``workflow_runs``; every lease change is guarded by worker and token."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def submit(self, brief: Any, idempotency_key: str | None = None) -> tuple[RunId, bool]:
        """Store a new pending run; the same idempotency key again returns the first run."""
        [(run_id, created)] = await self.submit_many([(brief, idempotency_key)])
        return run_id, created

    async def submit_many(self, briefs: Sequence[tuple[Any, str | None]]) -> list[tuple[RunId, bool]]:
        """Submit several runs in one statement; each result says whether the run is new."""
        ids = [new_run_id() for _ in briefs]
        keys = [key for _, key in briefs]
        payloads = [json.dumps(brief) for brief, _ in briefs]
        inserted = await self._db.fetch(_SUBMIT, ids, keys, payloads, SUBMITTED_CHANNEL)
        new_ids = {row["id"] for row in inserted}
        missing = [key for run_id, key in zip(ids, keys, strict=True) if run_id not in new_ids]
        existing: dict[str, uuid.UUID] = {}
        if missing:
            existing = {row["idempotency_key"]: row["id"] for row in await self._db.fetch(_BY_KEY, missing)}
        results: list[tuple[RunId, bool]] = []
        for run_id, key in zip(ids, keys, strict=True):
            if run_id in new_ids:
                results.append((RunId(run_id), True))
                continue
            # Only an idempotency key can make the insert skip a row, and runs are never deleted.
            first = existing.get(key) if key is not None else None
            if first is None:
                raise PermanentDatabaseError("a submission was neither stored nor found under its idempotency key")
            results.append((RunId(first), False))
        return results

    async def claim(self, worker: WorkerId, limit: int, lease_seconds: float) -> list[ClaimedRun]:
        """Take up to ``limit`` pending or abandoned runs, each under a new fencing token."""
        rows = await self._db.fetch(
            _CLAIM, worker, limit, lease_seconds, STEP_NAMES_BOUND, CANCEL_PREFIX, operation=Operation.CLAIM
        )  # one statement: atomic
        return await self._with_every_output(_claimed_runs(rows))

    async def _with_every_output(self, claimed: list[ClaimedRun]) -> list[ClaimedRun]:
        """The runs with the outputs of every step they passed, read again for those the claim read too early.

        A claim reads the outputs from its statement's snapshot, but locks (and returns) the run row's
        newest version: a step commit of the lease's previous holder that lands between the two (its
        lease ran out, nobody had claimed it yet, so its fence still held) moves the run past a step
        whose output the snapshot does not hold. That commit has ended by the time the claim has the
        row, so a second read sees it. Rare: only a run short of an output is read again.
        """
        short = [run.lease.run_id for run in claimed if len(run.outputs) < run.next_step.index]
        if not short:
            return claimed
        rows = await self._db.fetch(_OUTPUTS, short, operation=Operation.CLAIM)
        outputs = {row["run_id"]: {Step.at(int(i)): out for i, out in row["outputs"].items()} for row in rows}
        return [replace(run, outputs=outputs.get(run.lease.run_id, run.outputs)) for run in claimed]

    async def unanswered_claims(self, worker: WorkerId, known: Sequence[RunId]) -> list[ClaimedRun]:
        """Runs ``worker`` holds under a live lease other than ``known``: claimed, but the answer was lost."""
        return _claimed_runs(await self._db.fetch(_UNANSWERED, worker, list(known), operation=Operation.CLAIM))

    async def renew(self, worker: WorkerId, leases: Sequence[Lease], lease_seconds: float) -> Renewal:
        """Extend every lease still ours in one statement; runs cancelled meanwhile are given back instead."""
        if not leases:
            return Renewal(frozenset(), frozenset())
        ids, tokens = lease_arrays(leases)
        rows = await self._db.fetch(
            _RENEW, ids, tokens, worker, lease_seconds, STEP_NAMES_BOUND, CANCEL_PREFIX, operation=Operation.RENEWAL
        )
        renewed = frozenset(RunId(row["id"]) for row in rows if not row["cancelled"])
        return Renewal(renewed, frozenset(RunId(row["id"]) for row in rows if row["cancelled"]))

    async def release(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]:
        """Give runs back so that any daemon may claim them at once."""
        if not leases:
            return set()
        ids, tokens = lease_arrays(leases)
        rows = await self._db.fetch(_RELEASE, ids, tokens, worker, operation=Operation.RELEASE)
        return {RunId(row["id"]) for row in rows}

    async def release_all(self, worker: WorkerId) -> int:
        """Give back every run ``worker`` still holds (a previous life's); how many there were."""
        return len(await self._db.fetch(_RELEASE_ALL, worker, operation=Operation.RELEASE))

    async def ends(self, run_ids: Sequence[RunId]) -> dict[RunId, RunEnd]:
        """Of these runs, the ones that ended, and how."""
        return {
            RunId(row["id"]): RunEnd(row["status"], row["submitted"], row["finished"], row["failed"])
            for row in await self._db.fetch(_ENDS, list(run_ids))
        }

    async def count_by_status(self) -> dict[str, int]:
        """Every run counted by status: a scan of the whole table (tools and tests; not the daemon)."""
        return {row["status"]: row["n"] for row in await self._db.fetch(_COUNTS, operation=Operation.SAMPLE)}

    async def sample_statuses(self) -> StatusSample:
        """The backlog counted exactly, the finished runs estimated: a cost that does not grow with history.

        While the table is small (under ``EXACT_BELOW`` runs), finished runs are counted too: the scan
        costs less than a step's commit, and the statistics of a young table are far from the truth.
        """
        rows = await self._db.fetch(_IN_FLIGHT, operation=Operation.SAMPLE)
        in_flight = {RunStatus(row["status"]): int(row["n"]) for row in rows}
        [estimates] = await self._db.fetch(_ESTIMATES, operation=Operation.SAMPLE)
        live = max(int(estimates["live"]), sum(in_flight.values()))
        if live < EXACT_BELOW:
            rows = await self._db.fetch(_FINISHED_COUNTS, operation=Operation.SAMPLE)
            finished = {RunStatus(row["status"]): int(row["n"]) for row in rows}
            total = sum(in_flight.values()) + sum(finished.values())
            return StatusSample(in_flight, finished, total, **_operations(estimates))
        frequencies = {status: float(estimates["frequencies"].get(status.value, 0.0)) for status in TERMINAL}
        known = sum(frequencies.values())
        estimated = live - sum(in_flight.values())
        split = {
            status: round(estimated * frequency / known) if known else 0 for status, frequency in frequencies.items()
        }
        return StatusSample(in_flight=in_flight, finished=split, total=live, **_operations(estimates))

    async def count_overdue(self, grace_seconds: float = 0.0) -> int:
        rows = await self._db.fetch(_OVERDUE, grace_seconds, operation=Operation.SAMPLE)
        return int(rows[0][0])

    async def taken_over(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]:
        """Of these leases, the runs another daemon has claimed since (or that were given back)."""
        if not leases:
            return set()
        ids, tokens = lease_arrays(leases)
        rows = await self._db.fetch(_TAKEN_OVER, ids, tokens, worker, operation=Operation.RENEWAL)
        return {RunId(row["id"]) for row in rows}
