"""A daemon frozen past its leases (SIGSTOP) wakes up to find its runs taken: it writes nothing for them."""

from __future__ import annotations

import signal
import time
from functools import partial

import anyio
import pytest

from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, held_by, holds_at_least, report, submit_mix
from tests.chaos.waiting import wait_count, wait_until
from tests.chaos.write_log import count_frees, install_write_log, writes_not_by_holder
from tests.helpers import wait_terminal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STOPPED_SECONDS = 3.0

_TAKEN_OVER = """
    SELECT count(DISTINCT c.run_id) FROM chaos_writes c
    WHERE c.kind = 'claim' AND c.writer <> 'stale' AND c.run_id = ANY($1::uuid[])
"""

_SETTLED = """
    SELECT count(*) FROM workflow_runs r
    WHERE r.id = ANY($1::uuid[]) AND (r.status IN ('completed', 'compensated') OR EXISTS (
        SELECT 1 FROM chaos_writes c WHERE c.run_id = r.id AND c.kind = 'claim' AND c.writer <> 'stale'))
"""

# What the stale daemon wrote for a run after another daemon had claimed it (and before it claimed
# the run again, which it may legitimately do later).
_STALE_WRITES_AFTER_TAKEOVER = """
    SELECT count(*) FROM chaos_writes w
    WHERE w.writer = 'stale' AND w.kind <> 'claim' AND w.run_id = ANY($1::uuid[])
      AND EXISTS (
        SELECT 1 FROM chaos_writes c
        WHERE c.run_id = w.run_id AND c.kind = 'claim' AND c.writer <> 'stale' AND c.id < w.id
          AND NOT EXISTS (
            SELECT 1 FROM chaos_writes again
            WHERE again.run_id = w.run_id AND again.kind = 'claim' AND again.writer = 'stale'
              AND again.id > c.id AND again.id < w.id))
"""


async def _unsettled(db: Database, held: dict[RunId, int]) -> list[str]:
    """What keeps the frozen daemon's runs from the peer: the runs, and the frozen daemon's sessions."""
    rows = await db.fetch(
        "SELECT id, status, claimed_by, available_at - now() AS lease_left FROM workflow_runs"
        " WHERE id = ANY($1::uuid[]) AND status NOT IN ('completed', 'compensated')",
        list(held),
    )
    sessions = await db.fetch(
        "SELECT state, wait_event, now() - state_change AS for, left(query, 60) AS query FROM pg_stat_activity"
        " WHERE application_name = 'stale' AND state <> 'idle'"
    )
    return [str(dict(row)) for row in [*rows[:5], *sessions]]


async def test_a_stale_daemon_woken_after_its_leases_expired_is_fenced_and_carries_on(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    await install_write_log(db)
    lease = ("--lease-seconds", "1")
    stale = fleet.start(database_url, "stale", *lease, "--max-inflight", "100", "--batch-limit", "5")
    await stale.ready()
    outcomes = await submit_mix(runs, 600)

    await wait_until(partial(holds_at_least, db, "stale", 20), seconds=20, every=0.01)
    stale.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    held = await held_by(db, "stale")
    peer = fleet.start(database_url, "peer", *lease)

    # The peer claims every run the stale daemon held (or the stale daemon's last statement, sent
    # before it froze, finished it) while the stale daemon stays frozen past its leases. Under load, the
    # freeze often caught it inside a compensation transaction: its row locks kept the peer's claims
    # (SKIP LOCKED) off those runs for as long as it stayed frozen, until the server's limits
    # (store/limits.py) and the peer's reaper (stalled sessions) ended such sessions.
    try:
        await wait_count(db, _SETTLED, len(held), list(held), seconds=30)
    except TimeoutError:
        raise AssertionError(f"runs held by the frozen daemon never settled: {await _unsettled(db, held)}") from None
    await anyio.sleep(max(0.0, STOPPED_SECONDS - (time.monotonic() - stopped_at)))
    taken_over = int((await db.fetch(_TAKEN_OVER, list(held)))[0][0])
    assert taken_over > 0, "the peer took no run from the stale daemon"
    stale.signal(signal.SIGCONT)

    with anyio.fail_after(20):
        while True:
            lost = await sample(stale, "sagad_lease_renewals_total", result="lost")
            fenced = await sample(stale, "sagad_fenced_writes_total")
            if lost + fenced > 0:
                break
            await anyio.sleep(0.1)
    await wait_terminal(db, outcomes, seconds=60)

    # It carries on: with the peer gone, it claims and finishes new work alone.
    assert await peer.stop() == 0
    claims_before = await sample(stale, "sagad_claims_total")
    outcomes |= await submit_mix(runs, 100, first_seed=600)
    account = await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    claims_after = await sample(stale, "sagad_claims_total")
    assert claims_after >= claims_before + 100

    stale_writes = int((await db.fetch(_STALE_WRITES_AFTER_TAKEOVER, list(held)))[0][0])
    assert await count_frees(db, "stale") == 0, "the frozen daemon (its session alive) was taken for dead"
    assert stale_writes == 0, f"the stale daemon wrote {stale_writes} times for runs taken from it"
    assert await writes_not_by_holder(db) == []
    lost = await sample(stale, "sagad_lease_renewals_total", result="lost")
    fenced = await sample(stale, "sagad_fenced_writes_total")
    assert await sample(stale, "sagad_leases_lost_total", found_by="renewal") == lost
    assert await stale.stop() == 0
    report(
        "stale daemon",
        runs_pushed=len(outcomes),
        runs_held_when_frozen=len(held),
        taken_over_by_peer=taken_over,
        lost_leases=int(lost),
        fenced_writes=int(fenced),
        stale_writes_after_takeover=stale_writes,
        claims_after_wake=int(claims_after - claims_before),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
