"""Daemons killed with SIGKILL over and over while load runs: their runs are finished by the others."""

from __future__ import annotations

import random
import signal

import anyio
import pytest

from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_ended_as_built, held_by, max_attempts, report, submit_mix
from tests.chaos.write_log import count_writes, install_write_log, writes_not_by_holder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KILLS = 21
WAVE = 40
# Every kill costs the runs its victim held one claim. At this rate of kills a healthy run may be
# caught in several in a row, which --max-attempts (5 by default) would rightly fail as poison; this
# scenario is about rows, so it allows more.
OPTIONS = ("--lease-seconds", "1", "--max-inflight", "60", "--batch-limit", "10", "--max-attempts", "100")


async def test_repeated_sigkills_of_three_daemons_lose_and_duplicate_nothing(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    await install_write_log(db)
    slots = [fleet.start(database_url, f"{name}-0", *OPTIONS) for name in "abc"]
    for daemon in slots:
        await daemon.ready()
    chance = random.Random(20)
    outcomes: dict[RunId, Ending] = {}
    kills = held_when_killed = 0

    with anyio.fail_after(90):
        for kill in range(KILLS):
            slot = kill % len(slots)
            victim = slots[slot]
            await victim.ready()  # it has started and claims before it dies
            await anyio.sleep(chance.uniform(0.4, 0.8))
            # A wave just before each kill: the victim dies in the middle of its work, not idle.
            outcomes |= await submit_mix(runs, WAVE, first_seed=kill * WAVE)
            await anyio.sleep(chance.uniform(0.02, 0.15))
            victim.signal(signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
            kills += 1
            held_when_killed += len(await held_by(db, victim.worker))
            slots[slot] = fleet.start(database_url, f"{'abc'[slot]}-{kill // len(slots) + 1}", *OPTIONS)

    account = await assert_ended_as_built(db, database_url, outcomes, seconds=60)
    most_attempts = await max_attempts(db)
    assert held_when_killed > 0, "no kill hit a daemon holding runs"
    assert await writes_not_by_holder(db) == []
    for daemon in slots:
        await daemon.endpoint_url()
        daemon.signal(signal.SIGTERM)
    assert [await daemon.wait() for daemon in slots] == [0] * len(slots)
    reclaims = await count_writes(db, "claim") - len(outcomes)
    report(
        "repeated SIGKILL",
        runs_pushed=len(outcomes),
        kills_survived=kills,
        runs_held_by_killed_daemons=held_when_killed,
        reclaims=reclaims,
        most_claims_of_one_run=most_attempts,
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
