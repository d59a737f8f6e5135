"""A run claimed too many times is compensated as a poison run instead of being retried forever."""

from __future__ import annotations

import json
from functools import partial

import anyio
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import assert_ended_as_built, report, submit_mix
from tests.helpers import wait_terminal
from tests.processes import sagad

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_run_claimed_past_max_attempts_is_compensated_as_poison(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet
) -> None:
    poison, _ = await runs.submit(sample_brief(Ending.COMPLETED, 7))
    await db.fetch("UPDATE workflow_runs SET attempts = 10 WHERE id = $1", poison)
    healthy = await submit_mix(runs, 50, first_seed=100)

    daemon = fleet.start(database_url, "poison-eater", "--max-attempts", "5")
    assert (await wait_terminal(db, [poison], seconds=30))[poison] == "compensated"
    status = await anyio.to_thread.run_sync(partial(sagad, "status", str(poison), "--database-url", database_url))
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["status"] == "compensated"
    assert "poison run" in shown["last_error"], shown

    account = await assert_ended_as_built(db, database_url, healthy, seconds=30)
    rows = (await db.fetch("SELECT count(*) FROM onboarding_brief WHERE run_id = $1", poison))[0][0]
    assert rows == 0
    poisoned = await sample(daemon, "sagad_poison_runs_total")
    assert poisoned == 1
    assert await daemon.stop() == 0
    report(
        "poison run",
        runs_pushed=len(healthy) + 1,
        poison_runs=int(poisoned),
        last_error=repr(shown["last_error"]),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
