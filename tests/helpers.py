"""What many tests need: expected rows, row counts, waiting for runs, a daemon in-process."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from sagad.actors.ports import FaultPoints
from sagad.content.delivery import is_endpoint
from sagad.content.pipeline import builtin_pipeline, walk
from sagad.domain.operations import Run
from sagad.domain.pipeline import Pipeline
from sagad.domain.rows import StepWrite
from sagad.domain.runs import Lease, RunId, WorkerId
from sagad.domain.steps import BUSINESS_TABLES, Step
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.operations import OperationsStore
from sagad.supervisor import Settings, Supervisor

TABLES = BUSINESS_TABLES
BUILTIN = builtin_pipeline()


async def expected_rows(run_id: uuid.UUID, brief: Any) -> dict[str, int]:
    """Rows per table a completed run of ``brief`` holds, or all zero when the brief fails.

    A package delivered over HTTP (the daemon was told the host) writes what any package writes.
    """
    counts = dict.fromkeys(TABLES, 0)
    if isinstance(brief, dict) and is_endpoint(str(brief.get("delivery", {}).get("destination", ""))):
        brief = {**brief, "delivery": {**brief["delivery"], "destination": "endpoint"}}
    walked = await walk(BUILTIN, run_id, brief)
    if walked.failed_step is not None:
        return counts
    for result in walked.results:
        for table, rows in result.rows.items():
            counts[table] += len(rows)
    return counts


async def step_write(lease: Lease, brief: Any, step: Step) -> StepWrite:
    """What a daemon running the built-in pipeline commits for ``step`` of the run ``lease`` holds."""
    walked = await walk(BUILTIN, lease.run_id, brief)
    result = walked.results[step.index]
    return StepWrite(lease, rows=result.rows, output=json.dumps(result.output))


async def shown(db: Database, run_id: uuid.UUID) -> Run | None:
    """The run as ``sagad runs show`` and the client give it."""
    return await OperationsStore(db).show(RunId(run_id))


async def rows_of(db: Database, run_id: uuid.UUID) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        result = await db.fetch(f"SELECT count(*) FROM {table} WHERE run_id = $1", run_id)
        counts[table] = int(result[0][0])
    return counts


async def rows_per_table(db: Database) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        counts[table] = int((await db.fetch(f"SELECT count(*) FROM {table}"))[0][0])
    return counts


async def wait_terminal(db: Database, run_ids: Iterable[uuid.UUID], seconds: float = 30.0) -> dict[RunId, str]:
    """Wait, up to a deadline, until every run is completed or compensated; returns their statuses."""
    ids = list(run_ids)
    with anyio.fail_after(seconds):
        while True:
            rows = await db.fetch(
                "SELECT id, status FROM workflow_runs WHERE id = ANY($1::uuid[])"
                " AND status IN ('completed', 'compensated')",
                ids,
            )
            if len(rows) == len(ids):
                return {RunId(row["id"]): row["status"] for row in rows}
            await anyio.sleep(0.1)


@asynccontextmanager
async def running_daemon(
    db: Database,
    *,
    worker: str = "test-daemon",
    faults: FaultPoints | None = None,
    pipeline: Pipeline | None = None,
    **settings: Any,
) -> AsyncIterator[Supervisor]:
    """A daemon running in this process until the block ends (then drained and stopped)."""
    settings.setdefault("poll_seconds", 0.05)
    # Tests that hold leases under made-up worker ids (no daemon, no worker lock) beside an in-process
    # daemon would see them taken for dead; a test of the reaper asks for it.
    settings.setdefault("reap_seconds", None)
    supervisor = Supervisor(db, Settings(worker_id=WorkerId(worker), **settings), Metrics(), faults, pipeline)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run, stop)
        try:
            yield supervisor
        finally:
            stop.set()


async def expected_totals(db: Database) -> dict[str, int]:
    """Rows every table should hold: exactly the completed runs' rows, each once."""
    totals = dict.fromkeys(TABLES, 0)
    for row in await db.fetch("SELECT id, brief FROM workflow_runs WHERE status = 'completed'"):
        for table, n in (await expected_rows(row["id"], row["brief"])).items():
            totals[table] += n
    return totals


async def wait_finished(db: Database, at_least: int, seconds: float = 30.0) -> None:
    """Wait, up to a deadline, until at least ``at_least`` runs are terminal."""
    query = "SELECT count(*) FROM workflow_runs WHERE status IN ('completed', 'compensated')"
    with anyio.fail_after(seconds):
        while True:
            if (await db.fetch(query))[0][0] >= at_least:
                return
            await anyio.sleep(0.01)
