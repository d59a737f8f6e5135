"""A killed daemon's runs are taken over at once, not after its lease; a live worker id is never shared."""

from __future__ import annotations

import signal
from datetime import datetime
from functools import partial

import anyio
import pytest

from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, held_by, holds_at_least, report, submit_mix
from tests.chaos.waiting import wait_until
from tests.chaos.write_log import install_write_log, writes_not_by_holder
from tests.helpers import wait_terminal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE = 30.0
OPTIONS = ("--lease-seconds", str(LEASE), "--max-inflight", "60", "--batch-limit", "10")

# Runs the killed daemon held that were claimed again (a newer token) and finished: seconds after the kill.
_FINISHED_ELSEWHERE = """
    SELECT extract(epoch FROM min(r.finished_at) - $3)::float8 AS first,
           extract(epoch FROM max(r.finished_at) - $3)::float8 AS last, count(*) AS n
    FROM workflow_runs r JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, token) ON h.id = r.id
    WHERE r.lease_token > h.token
"""


async def _kill_holding(db: Database, fleet: Fleet, worker: str) -> tuple[dict[RunId, int], datetime]:
    """Kill ``worker`` (SIGKILL) while it holds runs; the runs and tokens it held, and the time of death."""
    victim = next(d for d in reversed(fleet.started) if d.worker == worker)
    await wait_until(partial(holds_at_least, db, worker, 20), seconds=30, every=0.01)
    victim.signal(signal.SIGKILL)
    [row] = await db.fetch("SELECT clock_timestamp() AS t")
    assert await victim.wait() == -signal.SIGKILL
    return await held_by(db, worker), row["t"]


async def _finished_elsewhere(db: Database, held: dict[RunId, int], killed_at: datetime) -> tuple[float, float, int]:
    ids = list(held)
    await wait_terminal(db, ids, seconds=LEASE)
    [row] = await db.fetch(_FINISHED_ELSEWHERE, ids, [held[run] for run in ids], killed_at)
    return row["first"], row["last"], int(row["n"])


async def test_a_killed_daemons_runs_are_finished_by_a_peer_long_before_its_lease_ends(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    await install_write_log(db)
    fleet.start(database_url, "victim", *OPTIONS)
    outcomes = await submit_mix(runs, 400)
    peer = fleet.start(database_url, "peer", *OPTIONS)
    await peer.metrics_url()

    held, killed_at = await _kill_holding(db, fleet, "victim")
    first, last, taken = await _finished_elsewhere(db, held, killed_at)

    account = await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    assert await writes_not_by_holder(db) == []
    reaped = await sample(peer, "sagad_reaped_runs_total")
    assert await peer.stop() == 0
    assert taken > 0
    assert last < LEASE / 3, f"the last run of the killed daemon was finished {last:.1f}s after its death"
    report(
        "SIGKILL takeover",
        lease=f"{LEASE:.0f}s",
        runs_held_when_killed=len(held),
        finished_by_the_peer=taken,
        first_finished_after=f"{first:.2f}s",
        last_finished_after=f"{last:.2f}s",
        runs_reaped=int(reaped),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )


async def test_a_daemon_back_under_the_same_worker_id_finishes_its_previous_lifes_runs_at_once(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    await install_write_log(db)
    fleet.start(database_url, "phoenix", *OPTIONS)
    outcomes = await submit_mix(runs, 300)

    held, killed_at = await _kill_holding(db, fleet, "phoenix")
    await anyio.sleep(1.0)
    reborn = fleet.start(database_url, "phoenix", *OPTIONS)
    first, last, taken = await _finished_elsewhere(db, held, killed_at)

    account = await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    assert await reborn.stop() == 0
    assert "gave back" in reborn.log.read_text()
    assert taken > 0
    assert last < LEASE / 3, f"the last run of the previous life was finished {last:.1f}s after its death"
    report(
        "SIGKILL, same worker id back 1 s later",
        lease=f"{LEASE:.0f}s",
        runs_held_when_killed=len(held),
        finished_by_the_next_life=taken,
        first_finished_after=f"{first:.2f}s",
        last_finished_after=f"{last:.2f}s",
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )


async def test_a_second_daemon_under_a_live_worker_id_refuses_to_start_with_one_line(
    database_url: str, fleet: Fleet
) -> None:
    first = fleet.start(database_url, "twin", *OPTIONS)
    await first.metrics_url()
    second = fleet.start(database_url, "twin", *OPTIONS)
    assert await second.wait(seconds=30) == 1
    [refusal] = [line for line in second.log.read_text().splitlines() if line.startswith("sagad:")]
    assert refusal == (
        "sagad: worker id 'twin' is in use by a live daemon (it holds the worker lock); "
        "give this daemon another --worker-id"
    )
    assert "Traceback" not in second.log.read_text()
    assert await first.stop() == 0
