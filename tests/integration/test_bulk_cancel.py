"""A bulk cancel of thousands of runs in flight ends with all of them compensated within a lease and a few seconds."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from sagad import Client, RunFilter, RunStatus
from sagad.content.pipeline import builtin_pipeline
from sagad.domain.pipeline import Pipeline, StepContext, StepResult
from sagad.domain.steps import Step
from sagad.store.db import Database
from tests.helpers import running_daemon

pytestmark = pytest.mark.anyio

BRIEF = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())
RUNS = int(os.environ.get("SAGAD_BULK_CANCEL_RUNS", "2000"))
LEASE = 6.0


class StuckStrategy:
    """Every run's second step hangs until cancelled: all of them are in flight, mid-call."""

    def __init__(self, expected: int) -> None:
        self.calls = 0
        self.expected = expected
        self.all_in_flight = anyio.Event()

    async def call(self, _: StepContext) -> StepResult:
        self.calls += 1
        if self.calls >= self.expected:
            self.all_in_flight.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    def pipeline(self) -> Pipeline:
        builtin = builtin_pipeline()
        specs = tuple(
            replace(spec, call=self.call, instant=False, timeout_seconds=600, concurrency=RUNS)
            if spec.step is Step.GENERATE_STRATEGY
            else spec
            for spec in builtin.steps
        )
        return replace(builtin, steps=specs)


async def test_a_bulk_cancel_of_runs_in_flight_compensates_them_all_within_a_lease(
    database_url: str, db: Database
) -> None:
    stuck = StuckStrategy(RUNS)
    async with (
        Client(database_url) as client,
        running_daemon(db, pipeline=stuck.pipeline(), lease_seconds=LEASE, max_inflight=RUNS),
    ):
        for start in range(0, RUNS, 500):
            await client.submit_many([BRIEF] * min(500, RUNS - start))
        with anyio.fail_after(60):
            await stuck.all_in_flight.wait()
        started = anyio.current_time()
        running = RunFilter(statuses=frozenset({RunStatus.RUNNING}))
        cancelled = []
        async for page in client.pages(running):
            cancelled += [result.run_id for result in await client.cancel([run.run_id for run in page], "bulk")]
        assert len(cancelled) == RUNS
        with anyio.fail_after(LEASE + 10):
            ended = [await client.wait(run_id, LEASE + 10) for run_id in cancelled]
        took = anyio.current_time() - started
    assert {run.status for run in ended} == {RunStatus.COMPENSATED}
    print(f"{RUNS} runs in flight cancelled and compensated in {took:.1f} s (lease {LEASE:g} s)")
    assert took < LEASE + 5
