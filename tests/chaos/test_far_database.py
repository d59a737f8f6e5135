"""A database 50 ms away (a delay proxy in a process of its own): a run takes a bounded number of round
trips, and submissions keep their rate."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from sqlalchemy.engine import make_url

from sagad.cli.load import Mix, Progress, submit_all, submitting_clients
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.helpers import wait_terminal
from tests.processes import REPO

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROUND_TRIP = 0.050
BOUND = 10
"""Round trips a completed run may take at p50 here (BENCHMARKS.md gives the figure: at most 8 is the target)."""
RATE = 60.0
RUNS = 300


@asynccontextmanager
async def far_away(database_url: str) -> AsyncIterator[str]:
    """``database_url`` through a proxy process that delays everything by half a round trip each way."""
    url = make_url(database_url)
    command = [sys.executable, "-m", "sagad.loadtest.distance", "--upstream", f"{url.host}:{url.port}"]
    command += ["--delay-ms", str(ROUND_TRIP * 1000 / 2)]
    async with await anyio.open_process(command, cwd=REPO, stderr=subprocess.STDOUT) as proxy:
        assert proxy.stdout is not None
        with anyio.fail_after(20):
            line = (await BufferedByteReceiveStream(proxy.stdout).receive_until(b"\n", 200)).decode()
        port = int(line.rsplit(":", 1)[1])
        try:
            yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        finally:
            proxy.terminate()


async def _ping(db: Database, round_trips: list[float], done: anyio.Event) -> None:
    """The round trip as the daemon sees it right now: a trivial statement through the proxy, again and again."""
    while not done.is_set():
        started = anyio.current_time()
        await db.fetch("SELECT 1")
        round_trips.append(anyio.current_time() - started)
        await anyio.sleep(0.05)


async def test_through_a_50_ms_round_trip_a_run_takes_a_few_of_them_and_submissions_keep_the_rate(
    throwaway_database_url: str, fleet: Fleet
) -> None:
    round_trips: list[float] = []
    async with far_away(throwaway_database_url) as far_url:
        daemon = fleet.start(far_url, "far", "--poll-seconds", "1")
        await daemon.ready(seconds=60)
        db = await Database.connect(far_url, max_size=8)
        try:
            ids: list[RunId] = []
            done = anyio.Event()
            async with submitting_clients(far_url) as clients, anyio.create_task_group() as tg:
                tg.start_soon(_ping, db, round_trips, done)
                await submit_all(clients, Mix.of(RUNS, 0.05, 0.05, 0.0).shuffled(), RATE, Progress(), ids)
                await wait_terminal(db, ids, seconds=60)
                done.set()
            ends = await RunStore(db).ends(ids)
        finally:
            await db.close()
    completed = [end.latency for end in ends.values() if end.outcome == "completed"]
    p50 = statistics.median(completed)
    # On a loaded machine every hop through the proxy (a Python process) also waits for a core: count
    # round trips as long as they take at the time (50 ms on a quiet machine), not as they should. A
    # run needs about 7 (a notification, a claim, five step commits, their lingers): 6.5 measured on a
    # quiet day, 7.5 to 8.6 on a day the VM's host stole CPU. One that waits for a poll or for another
    # batch's commit takes 20 and more.
    round_trip = max(ROUND_TRIP, statistics.median(round_trips))
    assert p50 <= BOUND * round_trip, (
        f"p50 {p50 * 1000:.0f} ms is {p50 / round_trip:.1f} round trips of {round_trip:.3f} s"
    )
    submitted = sorted(end.submitted_at for end in ends.values())
    rate = (len(submitted) - 1) / (submitted[-1] - submitted[0])
    # One at a time, a submission a round trip would cap the rate at 20 runs/s.
    assert rate >= 0.9 * RATE, f"submissions reached the database at {rate:.1f} runs/s, asked {RATE}"
    print(
        f"\nCHAOS far database: p50 {p50 * 1000:.0f} ms = {p50 / round_trip:.1f} round trips"
        f" of {round_trip * 1000:.0f} ms, submitted {rate:.1f}/s"
    )
