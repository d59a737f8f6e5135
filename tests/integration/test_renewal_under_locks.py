"""A run row locked by someone else does not keep a daemon from renewing its other leases."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import Lease
from sagad.domain.steps import Step
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.limits import SessionLimits
from sagad.store.runs import RunStore
from tests.chaos.waiting import wait_until
from tests.helpers import running_daemon, wait_terminal

pytestmark = pytest.mark.anyio

LEASE = 1.5
RUNS = 20


class _HeldAfterFirstStep:
    """Keeps the runs in flight (held, renewed) without any statement of the daemon holding their rows."""

    def __init__(self) -> None:
        self.released = anyio.Event()

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None:
        if step is Step.NORMALIZE_BRIEF:
            await self.released.wait()


_LIVE = """
    SELECT count(*) FILTER (WHERE id <> $2 AND available_at > now()) AS others_live,
           count(*) FILTER (WHERE id = $2 AND available_at > now()) AS locked_live
    FROM workflow_runs WHERE claimed_by = $1
"""


_TOKENS = "SELECT id, lease_token FROM workflow_runs WHERE id = ANY($1::uuid[]) ORDER BY id"


async def test_a_daemon_keeps_renewing_its_other_leases_while_one_run_row_is_locked_elsewhere(
    database_url: str, db: Database, runs: RunStore
) -> None:
    submitted = await runs.submit_many([(sample_brief(Ending.COMPLETED, n), None) for n in range(RUNS)])
    run_ids = [run_id for run_id, _ in submitted]
    hold = _HeldAfterFirstStep()
    daemon_db = await Database.connect(database_url, max_size=12, limits=SessionLimits.for_lease(LEASE))
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with running_daemon(daemon_db, worker="renewing", lease_seconds=LEASE, faults=hold) as daemon:

            async def holds_every_run() -> bool:
                return len(daemon.ledger) == RUNS

            await wait_until(holds_every_run, seconds=10, every=0.02)
            locked = run_ids[0]
            await locker.execute("BEGIN")
            await locker.execute("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE", locked)
            renewed_before = (
                daemon.metrics.registry.get_sample_value("sagad_lease_renewals_total", {"result": "renewed"}) or 0
            )
            tokens_before = await db.fetch(_TOKENS, run_ids)

            # Three leases long, the other runs' leases never lapse; the locked one's does (it is skipped).
            samples = []
            for _ in range(int(3 * LEASE / 0.25)):
                await anyio.sleep(0.25)
                [row] = await db.fetch(_LIVE, "renewing", locked)
                samples.append((row["others_live"], row["locked_live"]))
            renewed = (
                daemon.metrics.registry.get_sample_value("sagad_lease_renewals_total", {"result": "renewed"}) or 0
            ) - renewed_before
            lost = daemon.metrics.registry.get_sample_value("sagad_leases_lost_total", {"found_by": "renewal"})
            held_at_end = len(daemon.ledger)
            tokens_after = await db.fetch(_TOKENS, run_ids)

            await locker.execute("ROLLBACK")
            hold.released.set()
            statuses = await wait_terminal(db, run_ids, seconds=30)
    finally:
        await locker.close()
        await daemon_db.close()
    assert all(others == RUNS - 1 for others, _ in samples), samples
    assert tokens_after == tokens_before, "runs were claimed again: their leases had lapsed"
    assert samples[-1][1] == 0, "the locked run's lease was renewed through a lock"
    assert renewed >= (RUNS - 1) * 3 * 2, renewed  # three leases, three ticks each, at least two of them renewing
    assert lost == 0
    assert held_at_end == RUNS, "a run whose row was locked elsewhere was dropped"
    assert set(statuses.values()) == {"completed"}
