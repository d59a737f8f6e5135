"""A database 50 ms away (a delay proxy in a process of its own): a run takes at most 8 round trips, and
submissions keep their rate."""

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

from sagad.cli.load import Mix, Progress, submit_all
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.helpers import wait_terminal
from tests.processes import REPO

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROUND_TRIP = 0.050
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


async def test_through_a_50_ms_round_trip_a_run_takes_at_most_8_of_them_and_submissions_keep_the_rate(
    throwaway_database_url: str, fleet: Fleet
) -> None:
    async with far_away(throwaway_database_url) as far_url:
        daemon = fleet.start(far_url, "far", "--poll-seconds", "1")
        await daemon.ready(seconds=60)
        db = await Database.connect(far_url, max_size=8)
        try:
            ids: list[RunId] = []
            await submit_all(RunStore(db), Mix.of(RUNS, 0.05, 0.05, 0.0).shuffled(), RATE, Progress(), ids)
            await wait_terminal(db, ids, seconds=60)
            ends = await RunStore(db).ends(ids)
        finally:
            await db.close()
    completed = [end.latency for end in ends.values() if end.outcome == "completed"]
    p50 = statistics.median(completed)
    assert p50 <= 8 * ROUND_TRIP, f"p50 {p50 * 1000:.0f} ms is {p50 / ROUND_TRIP:.1f} round trips"
    submitted = sorted(end.submitted_at for end in ends.values())
    rate = (len(submitted) - 1) / (submitted[-1] - submitted[0])
    # One at a time, a submission a round trip would cap the rate at 20 runs/s.
    assert rate >= 0.9 * RATE, f"submissions reached the database at {rate:.1f} runs/s, asked {RATE}"
    print(f"\nCHAOS far database: p50 {p50 * 1000:.0f} ms = {p50 / ROUND_TRIP:.1f} round trips, submitted {rate:.1f}/s")
