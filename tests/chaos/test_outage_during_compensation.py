"""PostgreSQL down while runs are compensating: the daemon waits it out and finishes every compensation."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import pytest

from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, is_running, sample
from tests.chaos.invariants import FAILING, assert_ended_as_built, report, submit_mix
from tests.chaos.proxy import Upstream, running_proxy
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import count_when_reachable, wait_count
from tests.helpers import TABLES

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DOWN_SECONDS = 3.0

# Runs that failed after writing rows and are waiting for their compensation. The lock the test
# holds on their assets makes their compensation statement wait (it deletes those rows) until the
# server goes down under it.
_LOCK_COMPENSATING = """
    SELECT run_id AS id FROM production_bundle_assets
    WHERE run_id IN (
        SELECT id FROM workflow_runs WHERE status = 'compensating' AND failed_step IN ('qc_evaluate', 'deliver')
    )
    FOR UPDATE SKIP LOCKED
"""
_STILL_COMPENSATING = "SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status = 'compensating'"
_ROWS_OF_RUNS = "SELECT " + " + ".join(f"(SELECT count(*) FROM {t} WHERE run_id = ANY($1::uuid[]))" for t in TABLES)
_BLOCKED_ON_THE_TEST = """
    SELECT count(*) FROM pg_stat_activity
    WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE $2
"""
_UNFINISHED = "SELECT count(*) FROM workflow_runs WHERE status NOT IN ('completed', 'compensated')"


async def _lock_compensating_runs(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """Leave ``conn`` in a transaction holding locks on rows of runs waiting to be compensated; their ids."""
    with anyio.fail_after(30):
        while True:
            await conn.execute("BEGIN")
            if rows := await conn.fetch(_LOCK_COMPENSATING):
                return list(dict.fromkeys(row["id"] for row in rows))
            await conn.execute("ROLLBACK")
            await anyio.sleep(0.002)


async def test_compensations_cut_short_by_a_database_outage_finish_when_it_returns(
    throwaway_server: ThrowawayServer, throwaway_database_url: str, fleet: Fleet
) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=4)
    try:
        async with running_proxy(Upstream.of(url)) as proxy:
            daemon = fleet.start(proxy.url_for(url), "undaunted", "--lease-seconds", "2", "--batch-limit", "10")
            await daemon.ready()
            outcomes = await submit_mix(RunStore(db), 400, mix=FAILING)
            await wait_count(db, "SELECT count(*) FROM workflow_runs WHERE status = 'compensated'", 40)
            locker = await asyncpg.connect(asyncpg_dsn(url))
            try:
                interrupted = await _lock_compensating_runs(locker)
                rows_before = int(await locker.fetchval(_ROWS_OF_RUNS, interrupted))
                # The daemon's compensation statement of those runs (which marks them 'compensated'
                # and deletes their rows) has begun and waits on the test's lock.
                await wait_count(db, _BLOCKED_ON_THE_TEST, 1, daemon.worker, "%'compensated'%", seconds=15)
                await anyio.to_thread.run_sync(throwaway_server.stop)
            finally:
                locker.terminate()

            await anyio.sleep(DOWN_SECONDS)
            assert is_running(daemon), Fleet.log_tail(daemon)
            # The server is back, but the daemon is kept out until the test has looked.
            proxy.refusing = True
            await anyio.to_thread.run_sync(throwaway_server.start)
            still_compensating = await count_when_reachable(db, _STILL_COMPENSATING, interrupted)
            rows_after_outage = await count_when_reachable(db, _ROWS_OF_RUNS, interrupted)
            unfinished = await count_when_reachable(db, _UNFINISHED)
            assert still_compensating == len(interrupted)
            assert rows_after_outage == rows_before > 0, "a compensation was half done"
            proxy.refusing = False

            account = await assert_ended_as_built(db, url, outcomes, seconds=60)
            assert await count_when_reachable(db, _ROWS_OF_RUNS, list(outcomes)) == 0
            transient = await sample(daemon, "sagad_db_errors_total", kind="transient")
            assert transient > 0
            assert await daemon.stop() == 0
    finally:
        await db.close()
    report(
        "outage during compensation",
        runs_pushed=len(outcomes),
        seconds_down=DOWN_SECONDS,
        runs_held_compensating_through_outage=len(interrupted),
        their_rows_kept_through_outage=rows_after_outage,
        runs_unfinished_when_back=unfinished,
        transient_db_errors=int(transient),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
