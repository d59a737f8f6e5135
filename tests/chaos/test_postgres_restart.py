"""PostgreSQL stopped and started again three times under load: the daemons reconnect, nothing is lost."""

from __future__ import annotations

import signal

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, is_running, sample
from tests.chaos.invariants import assert_ended_as_built, max_attempts, report, submit_mix
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import wait_count
from tests.chaos.write_log import install_write_log, writes_not_by_holder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RESTARTS = 3
WAVE = 250
OPTIONS = ("--lease-seconds", "2", "--max-inflight", "100", "--batch-limit", "10")
FINISHED = "SELECT count(*) FROM workflow_runs WHERE status IN ('completed', 'compensated')"


async def test_daemons_ride_out_three_postgres_restarts_mid_load(
    throwaway_server: ThrowawayServer, throwaway_database_url: str, fleet: Fleet
) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=4)
    try:
        await install_write_log(db)
        daemons = [fleet.start(url, worker, *OPTIONS) for worker in ("north", "south")]
        for daemon in daemons:
            await daemon.ready()
        outcomes: dict[RunId, Ending] = {}
        in_flight: list[int] = []
        with anyio.fail_after(90):
            for restart in range(RESTARTS):
                outcomes |= await submit_mix(RunStore(db), WAVE, first_seed=restart * WAVE)
                # Mid-load: some of this wave finished, most of it not.
                await wait_count(db, FINISHED, len(outcomes) - WAVE + WAVE // 5)
                in_flight.append(len(outcomes) - int((await db.fetch(FINISHED))[0][0]))
                await anyio.to_thread.run_sync(throwaway_server.stop)
                await anyio.sleep(1.0)  # down long enough for every daemon to notice
                await anyio.to_thread.run_sync(throwaway_server.start)
                assert all(is_running(d) for d in daemons), [Fleet.log_tail(d) for d in daemons]
            await wait_count(db, "SELECT 1", 1)  # the test's own pool reconnected too
            outcomes |= await submit_mix(RunStore(db), 150, first_seed=RESTARTS * WAVE)

        account = await assert_ended_as_built(db, url, outcomes, seconds=60)
        most_attempts = await max_attempts(db)
        assert await writes_not_by_holder(db) == []
        transient = [await sample(d, "sagad_db_errors_total", kind="transient") for d in daemons]
        assert all(transient), f"a daemon saw no database error: {transient}"
        for daemon in daemons:
            await daemon.endpoint_url()
            daemon.signal(signal.SIGTERM)
        assert [await d.wait() for d in daemons] == [0, 0]
    finally:
        await db.close()
    report(
        "PostgreSQL restarts",
        runs_pushed=len(outcomes),
        restarts_survived=RESTARTS,
        runs_unfinished_at_each_stop=in_flight,
        transient_db_errors=int(sum(transient)),
        most_claims_of_one_run=most_attempts,
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
