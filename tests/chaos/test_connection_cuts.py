"""Every connection to PostgreSQL cut every 0.3 s, mid-transaction, while daemons work: nothing is lost."""

from __future__ import annotations

import signal

import anyio
import pytest

from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, max_attempts, report, submit_mix
from tests.chaos.proxy import Upstream, running_proxy
from tests.chaos.write_log import count_self_reclaims, count_writes, install_write_log, writes_not_by_holder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CUT_EVERY_SECONDS = 0.3
# --max-attempts high: a cut that loses the reply to a claim leaves runs claimed by a daemon that
# does not know it holds them; they come back when the lease expires, one attempt more. (A lost
# reply to a step or compensation commit is recognised on retry and costs nothing.)
OPTIONS = ("--lease-seconds", "2", "--max-inflight", "100", "--batch-limit", "20", "--max-attempts", "1000")


async def test_connections_cut_every_300ms_lose_and_duplicate_nothing(
    throwaway_database_url: str, fleet: Fleet
) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=4)  # the test's own connections do not go through the proxy
    try:
        await install_write_log(db)
        async with running_proxy(Upstream.of(url)) as proxy:
            daemons = [fleet.start(proxy.url_for(url), worker, *OPTIONS) for worker in ("east", "west")]
            for daemon in daemons:
                await daemon.ready()
            async with anyio.create_task_group() as cutting:
                cutting.start_soon(proxy.cut_every, CUT_EVERY_SECONDS)
                outcomes = await submit_mix(RunStore(db), 300)
                await anyio.sleep(1.0)
                outcomes |= await submit_mix(RunStore(db), 300, first_seed=300)
                account = await assert_ended_as_built(db, url, outcomes, seconds=90)
                cutting.cancel_scope.cancel()
            transient = [await sample(d, "sagad_db_errors_total", kind="transient") for d in daemons]
            fenced = [await sample(d, "sagad_fenced_writes_total") for d in daemons]
            for daemon in daemons:
                await daemon.endpoint_url()
                daemon.signal(signal.SIGTERM)
            assert [await d.wait() for d in daemons] == [0, 0]
        assert proxy.cuts > 0
        assert sum(transient) > 0, "the daemons saw no cut"
        assert await writes_not_by_holder(db) == []
        reclaims = await count_writes(db, "claim") - len(outcomes)
        self_reclaims = await count_self_reclaims(db)
        most_attempts = await max_attempts(db)
    finally:
        await db.close()
    report(
        "connection cuts",
        runs_pushed=len(outcomes),
        cuts_survived=proxy.cuts,
        connections_cut=proxy.connections_cut,
        transient_db_errors=int(sum(transient)),
        fenced_writes=int(sum(fenced)),
        reclaims=reclaims,
        reclaims_by_the_same_daemon=self_reclaims,
        most_claims_of_one_run=most_attempts,
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
