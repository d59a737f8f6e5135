"""The daemon in-process: idempotent steps, crash recovery, bad stored runs, no deadlock, transient errors."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import Lease, LeaseToken, RunId
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import SUBMITTED_CHANNEL, RunStore
from sagad.store.writes import column_arrays, insert_statement
from tests.helpers import (
    TABLES,
    expected_rows,
    expected_totals,
    rows_of,
    rows_per_table,
    running_daemon,
    shown,
    step_write,
    wait_terminal,
)

pytestmark = pytest.mark.anyio


class CrashAfterCommit:
    """Fault points that crash a step actor once, after its commit and before the hand-off."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.crashed_with: list[Lease] = []

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None:
        if step == self.step and not self.crashed_with:
            self.crashed_with.extend(leases)
            raise RuntimeError("crash between commit and hand-off")


async def submit_mix(runs: RunStore, n: int, fail_every: int = 0) -> dict[RunId, Ending]:
    outcomes = {}
    failing = [Ending.QC_FAIL, Ending.DELIVERY_FAIL, Ending.INVALID]
    for seed in range(n):
        outcome = failing[seed % 3] if fail_every and seed % fail_every == 0 else Ending.COMPLETED
        run_id, _ = await runs.submit(sample_brief(outcome, seed))
        outcomes[run_id] = outcome
    return outcomes


async def test_a_crash_between_commit_and_hand_off_duplicates_nothing(db: Database, runs: RunStore) -> None:
    briefs = [sample_brief(Ending.COMPLETED, seed) for seed in range(20)]
    ids = [(await runs.submit(brief))[0] for brief in briefs]
    faults = CrashAfterCommit(Step.GENERATE_DRAFT)
    async with running_daemon(db, faults=faults) as daemon:
        statuses = await wait_terminal(db, ids)
        restarts = daemon.metrics.registry.get_sample_value("sagad_actor_restarts_total", {"actor": "generate_draft"})
    assert faults.crashed_with, "the fault point never fired"
    assert restarts == 1
    assert set(statuses.values()) == {"completed"}
    for run_id, brief in zip(ids, briefs, strict=True):
        assert await rows_of(db, run_id) == await expected_rows(run_id, brief)


async def test_a_step_written_twice_adds_no_rows(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.COMPLETED, 1))
    write = await step_write(Lease(run_id, LeaseToken(1)), sample_brief(Ending.COMPLETED, 1), Step.NORMALIZE_BRIEF)
    for attempt in range(2):
        written = {}
        async with db.transaction() as conn:
            for table, table_rows in write.rows.items():
                status = await conn.execute(insert_statement(table), *column_arrays(table, table_rows))
                written[table] = int(status.rsplit(" ", 1)[-1])
        expected = {table: len(table_rows) for table, table_rows in write.rows.items()} if attempt == 0 else {}
        assert {t: n for t, n in written.items() if n} == expected


async def test_the_same_idempotency_key_gives_one_run(db: Database, runs: RunStore) -> None:
    first, created = await runs.submit(sample_brief(Ending.COMPLETED, 1), "order-42")
    again, created_again = await runs.submit(sample_brief(Ending.COMPLETED, 2), "order-42")
    assert (again, created, created_again) == (first, True, False)
    assert (await db.fetch("SELECT count(*) FROM workflow_runs"))[0][0] == 1


async def test_a_submission_notifies_listening_claimers_once_and_only_when_it_creates_runs(
    db: Database, runs: RunStore
) -> None:
    notified: list[str] = []
    arrived = anyio.Event()

    def on_notify(_conn: object, _pid: int, channel: str, _payload: str) -> None:
        notified.append(channel)
        arrived.set()

    batch = [(sample_brief(Ending.COMPLETED, n), f"batch-{n}") for n in range(5)]
    async with db.connection() as listener:
        await listener.add_listener(SUBMITTED_CHANNEL, on_notify)
        try:
            await runs.submit_many(batch)
            with anyio.fail_after(5):
                await arrived.wait()
            await runs.submit_many(batch)  # every key known: no new run, nothing to wake anyone for
            await anyio.sleep(0.3)
        finally:
            await listener.remove_listener(SUBMITTED_CHANNEL, on_notify)
    assert notified == [SUBMITTED_CHANNEL]


@pytest.mark.parametrize(
    ("brief", "names"),
    [
        (42, "brief: Input should be"),
        ({"client": 5}, "field 'client'"),
        ({**sample_brief(Ending.COMPLETED, 1), "word_limit": "many"}, "field 'word_limit'"),
        ({**sample_brief(Ending.COMPLETED, 1), "channels": ["carrier pigeon"]}, "field 'channels'"),
    ],
)
async def test_a_malformed_stored_brief_is_compensated_and_the_daemon_goes_on(
    db: Database, runs: RunStore, brief: object, names: str
) -> None:
    bad, _ = await runs.submit(brief)
    good, _ = await runs.submit(sample_brief(Ending.COMPLETED, 7))
    async with running_daemon(db):
        assert await wait_terminal(db, [bad, good]) == {bad: "compensated", good: "completed"}
    status = await shown(db, bad)
    assert status is not None
    assert status.failed_step == "normalize_brief"
    assert status.last_error is not None
    assert names in status.last_error
    assert await rows_of(db, bad) == dict.fromkeys(TABLES, 0)


async def test_bounded_inboxes_of_one_do_not_deadlock_with_half_the_runs_failing(db: Database, runs: RunStore) -> None:
    outcomes = await submit_mix(runs, 500, fail_every=2)
    async with running_daemon(db, inbox_size=1, batch_limit=3, max_inflight=200):
        statuses = await wait_terminal(db, outcomes, seconds=60)
    for run_id, outcome in outcomes.items():
        assert statuses[run_id] == ("completed" if outcome is Ending.COMPLETED else "compensated")


async def test_connections_killed_mid_load_lose_nothing(database_url: str, db: Database, runs: RunStore) -> None:
    outcomes = await submit_mix(runs, 300, fail_every=5)
    daemon_db = await Database.connect(database_url, max_size=12)
    try:
        async with running_daemon(daemon_db, batch_limit=10) as daemon:
            for _ in range(5):
                await anyio.sleep(0.05)
                await db.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            statuses = await wait_terminal(db, outcomes, seconds=60)
            errors = daemon.metrics.registry.get_sample_value("sagad_db_errors_total", {"kind": "transient"}) or 0
    finally:
        await daemon_db.close()
    assert errors > 0, "no connection was cut while the daemon worked"
    for run_id, outcome in outcomes.items():
        assert statuses[run_id] == ("completed" if outcome is Ending.COMPLETED else "compensated")
    assert await rows_per_table(db) == await expected_totals(db)
