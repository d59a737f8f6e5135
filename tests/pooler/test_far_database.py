"""A daemon far from its database batches more, and holds runs enough to fill its batches."""

from __future__ import annotations

import re

import anyio
import pytest
from sqlalchemy.engine import make_url

from sagad.loadtest.distance import DelayProxy
from sagad.store.distance import NEAR_BATCH, Depth
from tests.chaos.fleet import Fleet
from tests.processes import Daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

_STARTED = re.compile(r"running \(lease \S+, up to (\d+) runs, batches of (\d+),")


async def _depth(daemon: Daemon) -> Depth:
    """The batch limit and runs in flight the daemon's start line gives, once it is ready."""
    await daemon.ready()
    with anyio.fail_after(10):
        while (found := _STARTED.search(daemon.log.read_text())) is None:  # noqa: ASYNC110 (another process writes the log: no event to await)
            await anyio.sleep(0.05)
    return Depth(batch_limit=int(found[2]), max_inflight=int(found[1]))


def _through(proxy: DelayProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


async def test_a_daemon_50_ms_away_batches_more_than_one_beside_its_database(
    throwaway_database_url: str, fleet: Fleet
) -> None:
    upstream = make_url(throwaway_database_url)
    async with DelayProxy(upstream.host or "127.0.0.1", upstream.port or 5432, 0.025) as proxy:
        far = await _depth(fleet.start(_through(proxy, throwaway_database_url), "far"))
        near = await _depth(fleet.start(throwaway_database_url, "near"))
        given = await _depth(
            fleet.start(_through(proxy, throwaway_database_url), "told", "--batch-limit", "60", "--max-inflight", "300")
        )
    assert near == Depth(NEAR_BATCH, 1000)
    assert far.batch_limit > NEAR_BATCH, far
    assert far.max_inflight == 10 * far.batch_limit, far
    assert given == Depth(60, 300)


def test_the_depth_grows_with_the_round_trip_beyond_40_ms_and_stops_at_500() -> None:
    assert Depth.for_round_trip(0.0005) == Depth(100, 1000)
    assert Depth.for_round_trip(0.04) == Depth(100, 1000)
    assert Depth.for_round_trip(0.05) == Depth(120, 1200)
    assert Depth.for_round_trip(0.1) == Depth(250, 2500)
    assert Depth.for_round_trip(1.0) == Depth(500, 5000)
