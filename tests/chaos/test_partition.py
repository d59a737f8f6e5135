"""A daemon cut off from PostgreSQL (nothing forwarded, nothing closed) for longer than its lease: a peer
finishes its runs within the same bound as for a frozen daemon; healed, it writes nothing for runs it
lost, and carries on."""

from __future__ import annotations

import signal
import time
from functools import partial

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, held_by, holds_at_least, report, submit_mix
from tests.chaos.proxy import Upstream, running_proxy
from tests.chaos.waiting import wait_count, wait_until
from tests.chaos.write_log import install_write_log, writes_not_by_holder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE = 2.0
MARGIN = 1.5  # as for a frozen daemon (test_frozen_daemon.py): the peer's poll and the runs' remaining steps
PARTITION_SECONDS = 2 * LEASE
OPTIONS = ("--lease-seconds", str(LEASE), "--max-inflight", "60", "--batch-limit", "10", "--max-attempts", "1000")
HALF_COMPENSATE = (Ending.COMPLETED, Ending.QC_FAIL)

_UNFINISHED = """
    SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status NOT IN ('completed', 'compensated')
"""

# What the cut-off daemon wrote for a run after another daemon had claimed it (before claiming it again).
_WRITES_AFTER_TAKEOVER = """
    SELECT count(*) FROM chaos_writes w
    WHERE w.writer = 'cut-off' AND w.kind NOT IN ('claim', 'free') AND w.run_id = ANY($1::uuid[])
      AND EXISTS (
        SELECT 1 FROM chaos_writes c
        WHERE c.run_id = w.run_id AND c.kind = 'claim' AND c.writer <> 'cut-off' AND c.id < w.id
          AND NOT EXISTS (
            SELECT 1 FROM chaos_writes again
            WHERE again.run_id = w.run_id AND again.kind = 'claim' AND again.writer = 'cut-off'
              AND again.id > c.id AND again.id < w.id))
"""
_CLAIMS_BY_CUT_OFF_SINCE = "SELECT count(*) FROM chaos_writes WHERE writer = 'cut-off' AND kind = 'claim' AND id > $1"


async def test_a_daemon_cut_off_past_its_lease_loses_its_runs_to_a_peer_in_time_and_writes_nothing_for_them(
    throwaway_database_url: str, fleet: Fleet
) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=4)  # the test's own connections do not go through the proxy
    try:
        await install_write_log(db)
        runs = RunStore(db)
        async with running_proxy(Upstream.of(url)) as proxy:
            cut_off = fleet.start(proxy.url_for(url), "cut-off", *OPTIONS)
            peer = fleet.start(url, "peer", *OPTIONS)
            await cut_off.metrics_url()
            await peer.metrics_url()
            outcomes = await submit_mix(runs, 300, mix=HALF_COMPENSATE)
            await wait_until(partial(holds_at_least, db, "cut-off", 20), seconds=30, every=0.005)

            proxy.partition()
            cut_at = time.monotonic()
            held = list(await held_by(db, "cut-off"))

            async def all_finished() -> bool:
                return int((await db.fetch(_UNFINISHED, held))[0][0]) == 0

            await wait_until(all_finished, seconds=LEASE + MARGIN + 10, every=0.02)
            finished_in = time.monotonic() - cut_at
            await anyio.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
            [last_log] = await db.fetch("SELECT coalesce(max(id), 0) AS id FROM chaos_writes")
            proxy.heal()

            # It carries on: new work, claimed by it too.
            outcomes |= await submit_mix(runs, 200, first_seed=300, mix=HALF_COMPENSATE)
            await wait_count(db, _CLAIMS_BY_CUT_OFF_SINCE, 1, last_log["id"], seconds=30)
            account = await assert_ended_as_built(db, url, outcomes, seconds=60)

            after_takeover = int((await db.fetch(_WRITES_AFTER_TAKEOVER, held))[0][0])
            timeouts = await sample(cut_off, "sagad_db_timeouts_total")
            lost = await sample(cut_off, "sagad_leases_lost_total")
            fenced = await sample(cut_off, "sagad_fenced_writes_total")
            for daemon in (cut_off, peer):
                await daemon.endpoint_url()
                daemon.signal(signal.SIGTERM)
            assert [await cut_off.wait(), await peer.wait()] == [0, 0]
        assert await writes_not_by_holder(db) == []
    finally:
        await db.close()
    log = cut_off.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert finished_in <= LEASE + MARGIN, f"the cut-off daemon's runs waited {finished_in:.2f}s"
    assert after_takeover == 0, f"the cut-off daemon wrote {after_takeover} times for runs taken from it"
    assert timeouts > 0, "the cut-off daemon abandoned no statement"
    assert held, "the partition found the daemon idle"
    report(
        "network partition",
        lease=f"{LEASE}s",
        partition=f"{PARTITION_SECONDS}s",
        runs_pushed=len(outcomes),
        runs_held_when_cut_off=len(held),
        all_finished_by_peer_after=f"{finished_in:.2f}s (bound {LEASE + MARGIN}s)",
        writes_for_lost_runs_after_healing=after_takeover,
        its_db_timeouts=int(timeouts),
        its_fenced_writes=int(fenced),
        its_leases_lost=int(lost),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
