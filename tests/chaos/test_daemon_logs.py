"""What a daemon's log says: nothing alarming on a clean stop; one line when an outage starts, one when it ends."""

from __future__ import annotations

import re

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, is_running
from tests.chaos.invariants import assert_ended_as_built, report, submit_mix
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import wait_count

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STOPS = 5
OUTAGES = 2
FINISHED = "SELECT count(*) FROM workflow_runs WHERE status IN ('completed', 'compensated')"
_ALARMING = re.compile(r" (ERROR|CRITICAL) |Traceback|never retrieved|Exception", re.IGNORECASE)
# The lines of an outage: the database lost and back, the worker lock lost with its connection and back.
_OUTAGE_LINES = {
    "lost": re.compile(r"WARNING sagad\.store\.db: lost the database "),
    "back": re.compile(r"WARNING sagad\.store\.db: the database .* answers again, after "),
    "lock lost": re.compile(r"WARNING sagad\.store\.liveness: lost the lock on worker id "),
    "lock back": re.compile(r"WARNING sagad\.store\.liveness: holds the lock on worker id "),
}


def _alarming(log: str) -> list[str]:
    return [line for line in log.splitlines() if _ALARMING.search(line)]


async def test_a_daemon_stopped_mid_load_logs_no_error(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    outcomes: dict[RunId, Ending] = {}
    for stop in range(STOPS):
        daemon = fleet.start(database_url, f"stopping-{stop}", "--drain-seconds", "0.2")
        await daemon.metrics_url()
        outcomes |= await submit_mix(runs, 200, first_seed=stop * 200)
        await wait_count(db, FINISHED, len(outcomes) - 150)  # mid-load: statements in flight
        assert await daemon.stop() == 0
        log = daemon.log.read_text()
        assert _alarming(log) == [], log
    survivor = fleet.start(database_url, "survivor")
    await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    assert await survivor.stop() == 0
    assert _alarming(survivor.log.read_text()) == []


async def test_an_outage_logs_one_line_when_it_starts_and_one_when_it_ends(
    throwaway_server: ThrowawayServer, throwaway_database_url: str, fleet: Fleet
) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=2)
    try:
        daemon = fleet.start(url, "outlasting", "--lease-seconds", "6", "--batch-limit", "10")
        await daemon.metrics_url()
        outcomes: dict[RunId, Ending] = {}
        for outage in range(OUTAGES):
            outcomes |= await submit_mix(RunStore(db), 300, first_seed=outage * 300)
            await wait_count(db, FINISHED, len(outcomes) - 250)
            await anyio.to_thread.run_sync(throwaway_server.stop)
            await anyio.sleep(2.0)  # long enough for many retries of every actor
            await anyio.to_thread.run_sync(throwaway_server.start)
            assert is_running(daemon)
        await wait_count(db, "SELECT 1", 1)
        account = await assert_ended_as_built(db, url, outcomes, seconds=60)
        assert await daemon.stop() == 0
    finally:
        await db.close()
    lines = daemon.log.read_text().splitlines()
    counts = {kind: sum(1 for line in lines if pattern.search(line)) for kind, pattern in _OUTAGE_LINES.items()}
    others = [
        line
        for line in lines
        if (" WARNING " in line or " ERROR " in line) and not any(p.search(line) for p in _OUTAGE_LINES.values())
    ]
    assert counts["lost"] == counts["back"] == OUTAGES, counts
    assert counts["lock lost"] == counts["lock back"] == OUTAGES, counts
    assert others == [], others
    assert _alarming("\n".join(lines)) == []
    report(
        "outage log",
        outages=OUTAGES,
        log_lines=len(lines),
        **{kind.replace(" ", "_"): n for kind, n in counts.items()},
        rows_lost=account.lost,
        rows_duplicated=account.duplicated,
    )
