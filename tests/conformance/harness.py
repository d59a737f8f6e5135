"""Each store the actors' ports have, behind one face the conformance suite sets scenes and reads state through.

A scene is built with the ports themselves wherever they can build it (claims, step commits); what
no port does (submitting, letting time pass, another transaction holding a row, reading a run's
whole state) each harness does its own way: the fake by hand, the SQL one with SQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from sagad.actors.ports import CompensationDeferrals, Compensations, RunLeases, StepWriter
from sagad.domain.runs import RunId, RunStatus, WorkerId
from sagad.domain.steps import BUSINESS_TABLES, STEP_NAMES, Step
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore
from tests.unit.fakes import ME, FakeStore


class Writer(StepWriter, Compensations, CompensationDeferrals, Protocol):
    """The fenced writes a daemon makes for the runs it holds (one object per worker, as ``StepStore``)."""


@dataclass(frozen=True, slots=True)
class RunView:
    """What a store holds for one run, as far as the ports' promises reach."""

    status: RunStatus
    next_step: int
    """The index of the step to run next (one past the last once completed)."""
    failed_step: Step | None
    last_error: str | None
    compensation_error: str | None
    claimed_by: WorkerId | None
    token: int
    attempts: int
    rows: dict[str, int]
    """Business rows per table (tables without rows left out)."""
    outputs: dict[Step, Any]
    calls: dict[Step, tuple[int, str | None, int]]
    """What the run's history keeps of each committed step's call (attempts, retry reasons, lease token),
    before a compensation (with the output) and after it alike."""
    undone: list[tuple[Step, str]]
    """What its history keeps of its compensation's undos: each step and its outcome."""


class Harness(Protocol):
    """One implementation of the store ports, with ``writer`` writing for worker ``ME``."""

    name: str
    leases: RunLeases
    writer: Writer

    async def submit(self, brief: Any) -> RunId:
        """A new pending run, claimable at once (after every run submitted or given back before it)."""

    async def expire(self, run_ids: Sequence[RunId]) -> None:
        """Time passes for these runs: a lease or a deferral they wait out runs out now."""

    def held_elsewhere(self, run_ids: Sequence[RunId]) -> AbstractAsyncContextManager[None]:
        """A block during which another transaction holds these runs' rows."""

    async def view(self, run_id: RunId) -> RunView:
        """The run as the store holds it now."""


class FakeHarness:
    """The in-memory fake of ``tests/unit/fakes.py``."""

    name = "fake"

    def __init__(self) -> None:
        self.store = FakeStore(ME)
        self.leases: RunLeases = self.store
        self.writer: Writer = self.store

    async def submit(self, brief: Any) -> RunId:
        return self.store.submit(brief)

    async def expire(self, run_ids: Sequence[RunId]) -> None:
        self.store.expire(run_ids)

    @asynccontextmanager
    async def held_elsewhere(self, run_ids: Sequence[RunId]) -> AsyncIterator[None]:
        for run_id in run_ids:
            self.store.lock(run_id, times=None)
        try:
            yield
        finally:
            for run_id in run_ids:
                self.store.unlock(run_id)

    async def view(self, run_id: RunId) -> RunView:
        run = self.store.runs[run_id]
        return RunView(
            status=run.status,
            next_step=run.next_step.index + (run.status is RunStatus.COMPLETED),
            failed_step=run.failed_step,
            last_error=run.last_error,
            compensation_error=run.compensation_error,
            claimed_by=run.claimed_by,
            token=run.token,
            attempts=run.attempts,
            rows={table: len(rows) for table, rows in run.rows.items() if rows},
            outputs=dict(run.outputs),
            calls=dict(run.calls),
            undone=list(run.undone),
        )


_EXPIRE = """
    UPDATE workflow_runs SET available_at = now() WHERE id = ANY($1::uuid[]) AND available_at > now()
"""

_RUN = """
    SELECT status, next_step, failed_step, last_error, compensation_error, claimed_by, lease_token, attempts
    FROM workflow_runs WHERE id = $1
"""

_ROWS = " UNION ALL ".join(
    f"SELECT '{table}' AS name, count(*) AS n FROM {table} WHERE run_id = $1" for table in BUSINESS_TABLES
)


# A live run's calls are kept with its outputs; a compensation moves them to its history.
_CALLS = """
    SELECT step, attempts, retry_reasons, token FROM step_outputs WHERE run_id = $1
    UNION ALL
    SELECT array_position($2::text[], step) - 1, attempt, retry_reasons, token
    FROM run_history WHERE run_id = $1 AND event = 'committed'
"""
_UNDONE = "SELECT step, detail FROM run_history WHERE run_id = $1 AND event = 'undo' ORDER BY at"


class SqlHarness:
    """``RunStore`` and ``StepStore`` on a fresh migrated database."""

    name = "sql"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.runs = RunStore(db)
        self.leases: RunLeases = self.runs
        self.writer: Writer = StepStore(db, ME)

    async def submit(self, brief: Any) -> RunId:
        run_id, _ = await self.runs.submit(brief)
        return run_id

    async def expire(self, run_ids: Sequence[RunId]) -> None:
        await self.db.fetch(_EXPIRE, list(run_ids))

    @asynccontextmanager
    async def held_elsewhere(self, run_ids: Sequence[RunId]) -> AsyncIterator[None]:
        # A connection of its own, outside the store's pools: another daemon's transaction, or a stuck one.
        conn = await asyncpg.connect(asyncpg_dsn(self.db.url))
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM workflow_runs WHERE id = ANY($1::uuid[]) FOR UPDATE", list(run_ids))
                yield
        finally:
            await conn.close()

    async def view(self, run_id: RunId) -> RunView:
        [run] = await self.db.fetch(_RUN, run_id)
        rows = await self.db.fetch(_ROWS, run_id)
        outputs = await self.db.fetch("SELECT step, output FROM step_outputs WHERE run_id = $1", run_id)
        calls = await self.db.fetch(_CALLS, run_id, list(STEP_NAMES))
        undone = await self.db.fetch(_UNDONE, run_id)
        return RunView(
            status=RunStatus(run["status"]),
            next_step=run["next_step"],
            failed_step=None if run["failed_step"] is None else Step(run["failed_step"]),
            last_error=run["last_error"],
            compensation_error=run["compensation_error"],
            claimed_by=run["claimed_by"],
            token=run["lease_token"],
            attempts=run["attempts"],
            rows={row["name"]: int(row["n"]) for row in rows if row["n"]},
            outputs={Step.at(row["step"]): row["output"] for row in outputs},
            calls={Step.at(row["step"]): (row["attempts"], row["retry_reasons"], row["token"]) for row in calls},
            undone=[(Step(row["step"]), row["detail"]) for row in undone],
        )


def output_of(text: str) -> Any:
    """A step's output as a store gives it back: the JSON value of the text it was committed as."""
    return json.loads(text)
