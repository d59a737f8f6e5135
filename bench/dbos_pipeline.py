"""(c) DBOS Transact doing sagad's five steps: a workflow per run, a datasource transaction per step.

A run that fails at a step stops there (that transaction writes nothing); a compensating transaction
then deletes the rows its earlier steps wrote, children first. Run as
``python -m bench.dbos_pipeline --database-url URL --runs M``: it prints one JSON object, so DBOS's
threads and process-wide state stay out of the benchmark's own process.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig

from bench.ceiling import BUILTIN, SUBMIT_BATCH
from sagad.cli.load import Mix
from sagad.content.pipeline import walk
from sagad.content.samples import Ending, sample_brief
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.schema import children_first, metadata

Pipeline = Callable[[str, dict[str, Any]], Coroutine[Any, Any, str]]


def dbos_version() -> str:
    return importlib.metadata.version("dbos")


async def _submit(url: str, outcomes: Sequence[Ending]) -> list[tuple[str, dict[str, Any]]]:
    """The ``workflow_runs`` rows the business rows' foreign keys point at (not timed)."""
    db = await Database.connect(url, max_size=1)
    try:
        runs: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(outcomes), SUBMIT_BATCH):
            briefs = [sample_brief(o, start + n) for n, o in enumerate(outcomes[start : start + SUBMIT_BATCH])]
            submitted = await RunStore(db).submit_many([(brief, None) for brief in briefs])
            runs += [(str(run_id), brief) for (run_id, _), brief in zip(submitted, briefs, strict=True)]
        return runs
    finally:
        await db.close()


def _register(ds: AsyncSQLAlchemyDatasource) -> Pipeline:
    """Declare the transactions and the workflow (DBOS wants them before ``DBOS.launch()``)."""

    @ds.transaction()
    async def write_step(index: int, run_id: str, raw_brief: dict[str, Any]) -> str | None:
        """Insert one step's rows, parents first; a business failure writes nothing and is returned."""
        walked = await walk(BUILTIN, uuid.UUID(run_id), raw_brief)
        if index == len(walked.results):
            return walked.reason
        rows = walked.results[index].rows
        session = ds.sql_session()
        for table in metadata.sorted_tables:
            if rows.get(table.name):
                await session.execute(table.insert(), rows[table.name])
        return None

    @ds.transaction()
    async def compensate(run_id: str, failed_index: int) -> int:
        """Delete every row the run's earlier steps wrote, children first."""
        tables = {table for step in tuple(Step)[: failed_index + 1] for table in step.tables}
        session = ds.sql_session()
        deleted = 0
        for name in children_first(tables):
            table = metadata.tables[name]
            result = await session.execute(table.delete().where(table.c.run_id == uuid.UUID(run_id)))
            deleted += result.rowcount  # type: ignore[attr-defined]
        return deleted

    @DBOS.workflow()
    async def sagad_pipeline(run_id: str, raw_brief: dict[str, Any]) -> str:
        for index in range(len(Step)):
            if await write_step(index, run_id, raw_brief) is not None:
                await compensate(run_id, index)
                return "compensated"
        return "completed"

    return sagad_pipeline


async def measure_dbos(url: str, outcomes: Sequence[Ending]) -> dict[str, Any]:
    """Start one workflow per run, all at once, and time until every one has returned."""
    runs = await _submit(url, outcomes)
    config: DBOSConfig = {"name": "sagad-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    try:
        ds = await AsyncSQLAlchemyDatasource.create(url)
        pipeline = _register(ds)
        DBOS.launch()
        ended: dict[str, int] = {}

        async def one(run_id: str, brief: dict[str, Any]) -> None:
            handle = await DBOS.start_workflow_async(pipeline, run_id, brief)
            outcome = await handle.get_result()
            ended[outcome] = ended.get(outcome, 0) + 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for run_id, brief in runs:
                tg.start_soon(one, run_id, brief)
        seconds = time.perf_counter() - started
    finally:
        DBOS.destroy(destroy_registry=True)
    return {
        "runs": len(runs),
        "seconds": round(seconds, 3),
        "runs_per_s": round(len(runs) / seconds, 1) if seconds else 0.0,
        "outcomes": ended,
        "dbos_version": dbos_version(),
        "isolation_level": "SERIALIZABLE (the datasource default)",
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True, help="A migrated sagad database (it gets DBOS's tables too).")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fail-qc", type=float, default=0.04)
    parser.add_argument("--fail-delivery", type=float, default=0.03)
    parser.add_argument("--invalid", type=float, default=0.03)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    outcomes = Mix.of(args.runs, args.fail_qc, args.fail_delivery, args.invalid).shuffled()
    print(json.dumps(anyio.run(measure_dbos, args.database_url, outcomes)))


if __name__ == "__main__":
    main()
