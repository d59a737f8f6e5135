"""A run whose row another transaction holds does not hold up the cancel of the others, and is cancelled once free."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import pytest

from sagad import Client, RunFilter, RunStatus
from sagad.domain.operations import CancelResult
from sagad.domain.runs import RunId
from sagad.store.db import Database, asyncpg_dsn
from tests.chaos.waiting import wait_until

pytestmark = pytest.mark.anyio

BRIEF = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())


async def _by_ids(client: Client, runs: list[RunId]) -> list[CancelResult]:
    return await client.cancel(runs, "withdrawn")


async def _by_filter(client: Client, runs: list[RunId]) -> list[CancelResult]:
    # Pages of 7: the held run is in one of three pages, each chosen and cancelled in one statement.
    pending = RunFilter(statuses=frozenset({RunStatus.PENDING}))
    return [result async for page in client.cancel_where(pending, "withdrawn", page=7) for result in page]


@pytest.mark.parametrize("cancel_them", [_by_ids, _by_filter], ids=["by ids", "by filter"])
async def test_a_held_run_waits_alone_while_the_rest_of_the_page_is_cancelled(
    database_url: str, db: Database, cancel_them: Callable[[Client, list[RunId]], Awaitable[list[CancelResult]]]
) -> None:
    async with Client(database_url) as client:
        held, *free = await client.submit_many([(BRIEF, None) for _ in range(20)])
        locker = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            locking = locker.transaction()
            await locking.start()
            await locker.execute("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE", held)
            async with anyio.create_task_group() as tasks:
                outcomes = []

                async def cancel() -> None:
                    outcomes.extend(await cancel_them(client, [held, *free]))

                tasks.start_soon(cancel)

                async def rest_cancelled() -> bool:  # read beside the client, whose connection waits on the row
                    rows = await db.fetch("SELECT status FROM workflow_runs WHERE id = ANY($1::uuid[])", free)
                    return {row["status"] for row in rows} == {"compensated"}

                await wait_until(rest_cancelled, seconds=10)  # while the one row is still held
                [still] = await db.fetch("SELECT status FROM workflow_runs WHERE id = $1", held)
                assert still["status"] == "pending"
                await locking.commit()
        finally:
            await locker.close()
    assert sorted(outcome.run_id for outcome in outcomes) == sorted([held, *free])  # each once
    assert {outcome.outcome.value for outcome in outcomes} == {"compensated"}
    async with Client(database_url) as client:
        assert (await client.get(held)).status is RunStatus.COMPENSATED
