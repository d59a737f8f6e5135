"""A daemon frozen (SIGSTOP) at 100 random moments while half its runs compensate: each time, a peer
finishes every run it held within the lease plus a margin, whatever the frozen daemon was in the middle of."""

from __future__ import annotations

import contextlib
import random
import signal
import statistics
import time
from functools import partial

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, held_by, holds_at_least, report, submit_mix
from tests.chaos.waiting import wait_until
from tests.chaos.write_log import count_frees, install_write_log, writes_not_by_holder

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(400)]

FREEZES = 100
WAVE = 40
LEASE = 1.0
# After a freeze, the frozen daemon's leases end within LEASE (it renewed them at most LEASE/3 before,
# and the server has ended whatever it held by 2*LEASE/3). The peer then claims within its poll
# interval (0.05 s) and finishes each run's remaining steps: that, on a loaded machine, is the margin.
MARGIN = 1.5
OPTIONS = ("--lease-seconds", str(LEASE), "--max-inflight", "60", "--batch-limit", "10", "--max-attempts", "1000")
HALF_COMPENSATE = (Ending.COMPLETED, Ending.QC_FAIL)

_MID_TRANSACTION = """
    SELECT count(*) FROM pg_stat_activity
    WHERE application_name = 'frozen' AND state IN ('idle in transaction', 'active')
"""
_UNFINISHED = """
    SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status NOT IN ('completed', 'compensated')
"""


async def _stuck(db: Database, held: list[RunId]) -> list[str]:
    rows = await db.fetch(
        "SELECT id, status, next_step, claimed_by, lease_token, available_at - now() AS lease_left"
        " FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status NOT IN ('completed', 'compensated')",
        held,
    )
    sessions = await db.fetch(
        "SELECT application_name, state, wait_event_type, left(query, 60) AS query FROM pg_stat_activity"
        " WHERE application_name IN ('frozen', 'peer')"
    )
    return [str(dict(row)) for row in rows] + [str(dict(row)) for row in sessions]


async def test_a_daemon_frozen_at_random_moments_holds_no_run_past_its_lease(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    await install_write_log(db)
    frozen = fleet.start(database_url, "frozen", *OPTIONS)
    peer = fleet.start(database_url, "peer", *OPTIONS)
    await frozen.metrics_url()
    await peer.metrics_url()
    chance = random.Random(100)
    outcomes: dict[RunId, Ending] = {}
    waits: list[float] = []
    held_at_freezes = caught_mid_statement = 0

    for freeze in range(FREEZES):
        outcomes |= await submit_mix(runs, WAVE, first_seed=freeze * WAVE, mix=HALF_COMPENSATE)
        # A random moment of its work on the wave: once it holds some of it, 0 to 50 ms later (its share
        # of a wave takes a few commits; later, most freezes would find it idle).
        with contextlib.suppress(TimeoutError):
            await wait_until(partial(holds_at_least, db, "frozen", 1), seconds=3, every=0.005)
        await anyio.sleep(chance.uniform(0.0, 0.05))
        frozen.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        caught_mid_statement += int((await db.fetch(_MID_TRANSACTION))[0][0]) > 0
        held = list(await held_by(db, "frozen"))
        held_at_freezes += len(held)

        async def all_finished(held: list[RunId] = held) -> bool:
            return int((await db.fetch(_UNFINISHED, held))[0][0]) == 0

        try:
            await wait_until(all_finished, seconds=LEASE + MARGIN + 5, every=0.02)  # the bound is asserted below
        except TimeoutError:
            raise AssertionError(f"freeze {freeze}: runs still held: {await _stuck(db, held)}") from None
        if held:
            waits.append(time.monotonic() - stopped_at)
        frozen.signal(signal.SIGCONT)

    account = await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    assert await writes_not_by_holder(db) == []
    freed_while_frozen = await count_frees(db, "frozen")
    lost = await sample(frozen, "sagad_leases_lost_total")
    timeouts = await sample(frozen, "sagad_db_timeouts_total")
    for daemon in (frozen, peer):
        await daemon.endpoint_url()
        daemon.signal(signal.SIGTERM)
    assert [await frozen.wait(), await peer.wait()] == [0, 0]
    log = frozen.log.read_text()
    assert "Traceback" not in log, log[-3000:]

    worst = max(waits)
    assert worst <= LEASE + MARGIN, f"a frozen daemon's runs waited {worst:.2f}s (bound {LEASE + MARGIN}s)"
    assert freed_while_frozen == 0, "a frozen daemon (its session alive) was taken for dead"
    assert len(waits) >= FREEZES // 4, "the freezes found the daemon idle"
    report(
        "frozen daemon",
        freezes=FREEZES,
        lease=f"{LEASE}s",
        runs_pushed=len(outcomes),
        freezes_holding_runs=len(waits),
        runs_held_at_freezes=held_at_freezes,
        caught_with_a_statement_or_transaction_open=caught_mid_statement,
        all_held_runs_finished_by_peer_p50=f"{statistics.median(waits):.2f}s",
        max=f"{worst:.2f}s (bound {LEASE + MARGIN}s)",
        leases_lost_by_the_frozen_daemon=int(lost),
        its_db_timeouts=int(timeouts),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
