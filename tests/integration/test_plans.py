"""Statement plans made for nearly empty tables are replaced once the tables have grown."""

from __future__ import annotations

import uuid

import anyio
import pytest

from sagad.actors.sampler import REPLAN_FROM, StatusSampler
from sagad.domain.runs import StatusSample
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.runs import RunStore

pytestmark = pytest.mark.anyio

_GROWN = 20_000


async def _scans(db: Database) -> tuple[int, int]:
    """Sequential and index scans of workflow_runs so far, this connection's included."""
    await db.fetch("SELECT pg_stat_force_next_flush()")
    [row] = await db.fetch(
        "SELECT pg_stat_clear_snapshot(), seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'workflow_runs'"
    )
    return row["seq_scan"], row["idx_scan"]


async def _grow(db: Database, runs: int) -> None:
    await db.fetch(
        "INSERT INTO workflow_runs (id, brief) SELECT gen_random_uuid(), '{}' FROM generate_series(1, $1::int)", runs
    )


# A join whose plan the planner chooses from the table's size: the daemon's own statements now look
# each run up by its key whatever the planner knows, so the probe is a statement of the test's own.
_RUNS_BY_ID = "SELECT count(*) FROM workflow_runs r JOIN unnest($1::uuid[]) AS h(id) ON h.id = r.id"


async def test_a_refresh_replaces_the_full_scans_planned_for_an_empty_table(database_url: str) -> None:
    db = await Database.connect(database_url, max_size=1)  # one connection: its plans are the ones looked at
    try:
        probe = [uuid.uuid4()]
        for _ in range(10):  # past the executions after which PostgreSQL may keep a generic plan
            await db.fetch(_RUNS_BY_ID, probe)
        await _grow(db, _GROWN)

        seq_before, _ = await _scans(db)
        await db.fetch(_RUNS_BY_ID, probe)
        seq_stale, idx_stale = await _scans(db)
        assert seq_stale > seq_before, "the plan made for the empty table should still scan it whole"

        db.refresh_plans()
        await db.fetch(_RUNS_BY_ID, probe)
        seq_after, idx_after = await _scans(db)
        assert seq_after == seq_stale, "after the refresh, finding runs by id must not scan the table"
        assert idx_after > idx_stale
    finally:
        await db.close()


class _RecordedRefreshes:
    def __init__(self) -> None:
        self.count = 0
        self.refreshed = anyio.Event()

    def refresh_plans(self) -> None:
        self.count += 1
        self.refreshed.set()
        self.refreshed = anyio.Event()


class _CountedSamples(RunStore):
    """The real store, counting the sampler's passes (each begins with a sample of statuses)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.begun = 0
        self._next = anyio.Event()

    async def sample_statuses(self) -> StatusSample:
        self.begun += 1
        self._next.set()
        self._next = anyio.Event()
        return await super().sample_statuses()

    async def passes(self, n: int, seconds: float = 10) -> None:
        """Return once ``n`` whole passes have run from now (a pass ends when the next one begins)."""
        target = self.begun + n + 1
        with anyio.fail_after(seconds):
            while self.begun < target:
                await self._next.wait()


async def test_the_sampler_refreshes_plans_when_the_runs_double(db: Database) -> None:
    plans = _RecordedRefreshes()
    runs = _CountedSamples(db)
    sampler = StatusSampler(store=runs, plans=plans, metrics=Metrics(), every_seconds=0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        await runs.passes(3)
        assert plans.count == 0  # an empty database: nothing to re-plan for
        refreshed = plans.refreshed
        await _grow(db, REPLAN_FROM)
        with anyio.fail_after(10):
            await refreshed.wait()
        await runs.passes(3)
        assert plans.count == 1  # the same size again: no second refresh
        refreshed = plans.refreshed
        await _grow(db, REPLAN_FROM)
        with anyio.fail_after(10):
            await refreshed.wait()
        assert plans.count == 2
        tg.cancel_scope.cancel()
