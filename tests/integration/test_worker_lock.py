"""Worker locks: one live daemon per worker id, a previous life's runs given back, dead daemons' runs taken over."""

from __future__ import annotations

import time

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import RunId, WorkerId
from sagad.errors import WorkerIdInUse
from sagad.metrics import Metrics
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from sagad.supervisor import Settings, Supervisor
from tests.helpers import running_daemon, wait_terminal

pytestmark = pytest.mark.anyio

LONG_LEASE = 600.0  # far longer than any test waits: only the worker lock can bring these runs back in time
_HOLD_LOCK = "SELECT pg_advisory_lock(hashtextextended($1, 370349))"  # the key of store/liveness.py


async def _claimed_under(runs: RunStore, worker: str, n: int, first_seed: int) -> list[RunId]:
    submitted = await runs.submit_many([(sample_brief(Ending.COMPLETED, first_seed + i), None) for i in range(n)])
    claimed = await runs.claim(WorkerId(worker), n, LONG_LEASE)
    assert {c.lease.run_id for c in claimed} == {run_id for run_id, _ in submitted}
    return [run_id for run_id, _ in submitted]


async def test_a_second_daemon_under_a_live_worker_id_is_refused(db: Database) -> None:
    async with running_daemon(db, worker="only-one"):
        twin = Supervisor(db, Settings(worker_id=WorkerId("only-one")), Metrics())
        with pytest.raises(WorkerIdInUse, match="'only-one' is in use by a live daemon"):
            await twin.run(anyio.Event())
    # Once the first has stopped, the worker id is free again.
    async with running_daemon(db, worker="only-one"):
        pass


async def test_a_daemon_gives_back_at_start_the_runs_its_previous_life_held(db: Database, runs: RunStore) -> None:
    held = await _claimed_under(runs, "phoenix", 5, 0)  # claimed by a life that died without a word
    started = time.monotonic()
    async with running_daemon(db, worker="phoenix", lease_seconds=LONG_LEASE):
        statuses = await wait_terminal(db, held, seconds=20)
    assert set(statuses.values()) == {"completed"}
    assert time.monotonic() - started < 20 < LONG_LEASE


async def test_the_runs_of_a_worker_whose_lock_is_free_are_taken_over_and_a_live_ones_are_not(
    database_url: str, db: Database, runs: RunStore
) -> None:
    alive = await asyncpg.connect(asyncpg_dsn(database_url))  # a daemon that lives: its lock is held
    try:
        await alive.execute(_HOLD_LOCK, "alive")
        of_alive = await _claimed_under(runs, "alive", 5, 0)
        of_ghost = await _claimed_under(runs, "ghost", 5, 100)  # a daemon that died: nobody holds its lock
        started = time.monotonic()
        async with running_daemon(db, worker="rescuer", reap_seconds=0.2) as rescuer:
            statuses = await wait_terminal(db, of_ghost, seconds=20)
            taken_over_in = time.monotonic() - started
            await anyio.sleep(1.0)  # five more passes of the reaper
            reaped = rescuer.metrics.registry.get_sample_value("sagad_reaped_runs_total") or 0
        still_alive = await db.fetch(
            "SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[]) AND claimed_by = 'alive'"
            " AND available_at > now() + interval '60 seconds'",
            of_alive,
        )
    finally:
        await alive.close()
    assert set(statuses.values()) == {"completed"}
    assert taken_over_in < 10
    assert reaped == 5
    assert still_alive[0][0] == 5, "the runs of a daemon holding its lock were taken"
