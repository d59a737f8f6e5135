"""SIGTERM with runs in flight: the daemon drains briefly, gives the rest back, and exits 0."""

from __future__ import annotations

import signal
import time
from functools import partial

import asyncpg
import pytest

from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_ended_as_built, held_by, holds_at_least, report, submit_mix
from tests.chaos.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LONG_LEASE = ("--lease-seconds", "60")


async def test_sigterm_releases_leases_so_a_peer_finishes_at_once_not_after_expiry(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    # A slow database, as the daemon sees it: the last step's inserts wait on a lock the test holds,
    # so the runs that reach it cannot finish while the daemon drains. Table locks are taken before
    # any row is, so the waiting step holds no run row that the release would wait for.
    slow = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await slow.execute("BEGIN")
        await slow.execute("LOCK TABLE delivery_packages IN SHARE MODE")
        outcomes = await submit_mix(runs, 600)
        leaving = fleet.start(database_url, "leaving", *LONG_LEASE, "--drain-seconds", "0.5")
        await wait_until(partial(holds_at_least, db, "leaving", 150), seconds=30)
        held = await held_by(db, "leaving")

        leaving.signal(signal.SIGTERM)
        assert await leaving.wait(seconds=20) == 0, Fleet.log_tail(leaving)
        still_claimed = (await db.fetch("SELECT count(*) FROM workflow_runs WHERE claimed_by = 'leaving'"))[0][0]
        assert still_claimed == 0, f"{still_claimed} runs left claimed by the daemon that exited"
        released = (
            await db.fetch(
                "SELECT count(*) FROM workflow_runs"
                " WHERE id = ANY($1::uuid[]) AND status IN ('running', 'compensating') AND available_at <= now()",
                list(held),
            )
        )[0][0]
        assert released > 0, "no run was in flight when the daemon stopped"
    finally:
        await slow.close()  # the database is fast again

    started = time.monotonic()
    peer = fleet.start(database_url, "peer", *LONG_LEASE)
    account = await assert_ended_as_built(db, database_url, outcomes, seconds=30)
    finished_in = time.monotonic() - started
    assert finished_in < 30, "the peer waited for leases to expire"
    assert await peer.stop() == 0
    report(
        "SIGTERM",
        runs_pushed=len(outcomes),
        held_at_sigterm=len(held),
        released_unfinished=released,
        left_claimed=still_claimed,
        peer_finished_all_in=f"{finished_in:.1f}s (lease 60s)",
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
