"""Eight daemons at the default connection budget share a server with PostgreSQL's default max_connections."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.budget import DEFAULT_CONNECTIONS
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_ended_as_built, report, submit_mix
from tests.chaos.server import ThrowawayServer, launched

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DAEMONS = 8
WAVES = 6
WAVE = 150
OPTIONS = ("--max-inflight", "200", "--batch-limit", "50")

_CONNECTIONS = """
    SELECT application_name, count(*) AS n FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND application_name LIKE 'budget-%' GROUP BY application_name
"""


@pytest.fixture
def small_server() -> Iterator[ThrowawayServer]:
    """A server with PostgreSQL's default max_connections, whatever the library's configuration says."""
    with launched(max_connections="100") as server:
        yield server


@pytest.fixture
def small_database_url(small_server: ThrowawayServer) -> str:
    return small_server.create_database("sagad_budget")


async def _sample_connections(db: Database, most: Counter[str], stop: anyio.Event) -> None:
    """The most connections each daemon had open at once, sampled every 20 ms until ``stop``."""
    while not stop.is_set():
        for row in await db.fetch(_CONNECTIONS):
            most[row["application_name"]] = max(most[row["application_name"]], int(row["n"]))
        with anyio.move_on_after(0.02):
            await stop.wait()


async def test_eight_daemons_at_the_default_budget_stay_within_it_and_finish_every_run(
    small_database_url: str, fleet: Fleet
) -> None:
    url = small_database_url
    db = await Database.connect(url, max_size=2)
    try:
        [[limit]] = await db.fetch("SELECT current_setting('max_connections')::int")
        assert limit == 100
        daemons = [fleet.start(url, f"budget-{n}", *OPTIONS) for n in range(DAEMONS)]
        with anyio.fail_after(60):
            for daemon in daemons:
                await daemon.ready()
        most: Counter[str] = Counter()
        stop = anyio.Event()
        outcomes: dict[RunId, Ending] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sample_connections, db, most, stop)
            for wave in range(WAVES):
                outcomes |= await submit_mix(RunStore(db), WAVE, first_seed=wave * WAVE)
                await anyio.sleep(0.3)
            account = await assert_ended_as_built(db, url, outcomes, seconds=90)
            stop.set()
        for daemon in daemons:
            await daemon.endpoint_url()
            daemon.signal(signal.SIGTERM)
        assert [await daemon.wait() for daemon in daemons] == [0] * DAEMONS
    finally:
        await db.close()
    report("eight daemons, default budget", runs=len(outcomes), most_connections=dict(sorted(most.items())))
    assert set(most) == {daemon.worker for daemon in daemons}
    assert max(most.values()) <= DEFAULT_CONNECTIONS, most
    # The sampling saw each daemon's sessions (lock, listener, renewals and its work pool), not a quiet moment.
    assert min(most.values()) >= DEFAULT_CONNECTIONS - 2, most
    assert account.lost == account.duplicated == 0
