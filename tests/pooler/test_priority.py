"""Renewals and releases never wait behind step commits for a connection, whatever the budget."""

from __future__ import annotations

import anyio
import pytest

from sagad.domain.db_operations import Operation
from sagad.store.budget import DEFAULT_CONNECTIONS, ConnectionBudget
from sagad.store.db import Database
from sagad.store.limits import SessionLimits

pytestmark = pytest.mark.anyio

HELD_SECONDS = 1.5


async def _commit_that_takes_long(db: Database, started: anyio.Event, busy: list[int], work: int) -> None:
    async with db.connection(Operation.COMMIT) as conn:
        busy.append(1)
        if len(busy) == work:
            started.set()
        await conn.execute(f"SELECT pg_sleep({HELD_SECONDS})")


async def test_renewals_and_releases_get_a_connection_while_commits_hold_every_work_connection(
    database_url: str,
) -> None:
    budget = ConnectionBudget.split(DEFAULT_CONNECTIONS)
    db = await Database.connect(database_url, limits=SessionLimits.for_lease(30.0), budget=budget)
    try:
        started, busy = anyio.Event(), list[int]()
        async with anyio.create_task_group() as tg:
            for _ in range(budget.work):
                tg.start_soon(_commit_that_takes_long, db, started, busy, budget.work)
            with anyio.fail_after(5):
                await started.wait()
            for operation in (Operation.RENEWAL, Operation.RELEASE):
                with anyio.fail_after(HELD_SECONDS / 3):
                    await db.fetch("SELECT 1", operation=operation)
            # The work pool itself is full: a claim waits for a commit to end (the test can tell them apart).
            began = anyio.current_time()
            await db.fetch("SELECT 1", operation=Operation.CLAIM)
            assert anyio.current_time() - began > HELD_SECONDS / 3
    finally:
        await db.close()
