"""(b) The ceiling: the SQL sagad issues per run, replayed by a few asyncpg connections, no actors.

Every run's rows are computed before the clock starts, so only the database work is timed: per
claimed batch, the exact claim, one fenced group commit per step (``StepStore.commit_step``: the
``_ADVANCE`` fence and the multi-row inserts) and one compensation transaction for the batch's
failed runs (``StepStore.compensate``: ``_FINISH_COMPENSATION`` and children-first deletes).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from sagad.actors.sampler import outgrown
from sagad.content.pipeline import builtin_pipeline, walk
from sagad.content.samples import Ending, sample_brief
from sagad.domain.rows import Rows, StepWrite
from sagad.domain.runs import Lease, RunId, WorkerId
from sagad.domain.steps import Step
from sagad.store.audit import audit_database
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore

BUILTIN = builtin_pipeline()
SUBMIT_BATCH = 200
LEASE_SECONDS = 300.0
_CALL_SECONDS = 0.0002
"""What each call is said to have taken, for the history: an instant step's order of time."""


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """A run's rows and output for each step it passes, and why it fails at the next one (if it does)."""

    steps: tuple[tuple[Rows, str], ...]
    failure: str | None

    def write(self, index: int, lease: Lease) -> StepWrite:
        if index < len(self.steps):
            rows, output = self.steps[index]
            return StepWrite(lease, rows=rows, output=output, call_seconds=_CALL_SECONDS)
        return StepWrite(lease, failure=self.failure or "failed", call_seconds=_CALL_SECONDS)


async def plan_run(run_id: uuid.UUID, raw_brief: Any) -> PlannedRun:
    """What sagad's step actors would write for this run, computed up front."""
    walked = await walk(BUILTIN, run_id, raw_brief)
    return PlannedRun(tuple((r.rows, json.dumps(r.output)) for r in walked.results), walked.reason)


@dataclass(slots=True)
class CeilingResult:
    """How long the replay took, and what it did."""

    runs: int
    seconds: float = 0.0
    connections: int = 0
    transactions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    audit_clean: bool = False
    finished: int = 0
    planned_for: int = 0

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0


def _compensated_tables(last_failed_step: int) -> frozenset[str]:
    """Every table of the steps up to the latest one that failed: what sagad's relays collect."""
    return frozenset(table for step in tuple(Step)[: last_failed_step + 1] for table in step.tables)


async def _run_batch(
    store: StepStore, leases: Sequence[Lease], plans: dict[RunId, PlannedRun], result: CeilingResult
) -> None:
    alive = list(leases)
    failed: list[Lease] = []
    last_failed_step = 0
    for index, step in enumerate(Step):
        if not alive:
            break
        writes = [plans[lease.run_id].write(index, lease) for lease in alive]
        committed = await store.commit_step(step, writes)
        result.transactions += 1
        owned = [w for w in writes if w.lease.run_id in committed.owned]
        alive = [w.lease for w in owned if w.failure is None]
        if len(alive) < len(owned):
            failed += [w.lease for w in owned if w.failure is not None]
            last_failed_step = index
    if failed:
        await store.compensate(failed, _compensated_tables(last_failed_step))
        result.transactions += 1
    result.finished += len(leases)


async def _drain(
    db: Database,
    worker: WorkerId,
    plans: dict[RunId, PlannedRun],
    batch: int,
    result: CeilingResult,
    keeps_history: bool,
) -> None:
    """Claim and carry batches until no run is left to claim."""
    runs, steps = RunStore(db), StepStore(db, worker, keeps_history=keeps_history)
    while claimed := await runs.claim(worker, batch, LEASE_SECONDS):
        result.transactions += 1
        await _run_batch(steps, [run.lease for run in claimed], plans, result)
        # As the daemon's sampler does: re-plan when the tables have doubled since the last plans.
        if outgrown(result.finished, result.planned_for):
            db.refresh_plans()
            result.planned_for = result.finished


async def measure_ceiling(
    url: str, outcomes: Sequence[Ending], *, connections: int = 5, batch: int = 100, keeps_history: bool = True
) -> CeilingResult:
    """Submit and plan every run (untimed), then time ``connections`` loops carrying them all to the end.

    ``keeps_history=False``: the step and compensation statements without the run's history.
    """
    db = await Database.connect(url, max_size=connections)
    try:
        runs = RunStore(db)
        plans: dict[RunId, PlannedRun] = {}
        for start in range(0, len(outcomes), SUBMIT_BATCH):
            briefs = [sample_brief(o, start + n) for n, o in enumerate(outcomes[start : start + SUBMIT_BATCH])]
            submitted = await runs.submit_many([(brief, None) for brief in briefs])
            for (run_id, _), brief in zip(submitted, briefs, strict=True):
                plans[run_id] = await plan_run(run_id, brief)
        result = CeilingResult(runs=len(outcomes), connections=connections)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(connections):
                tg.start_soon(_drain, db, WorkerId(f"ceiling-{n}"), plans, batch, result, keeps_history)
        result.seconds = time.perf_counter() - started
        result.outcomes = await runs.count_by_status()
        result.audit_clean = (await audit_database(db)).clean
        return result
    finally:
        await db.close()
