"""Runs leave no reference cycles behind, and a run in flight holds no more objects than the collector allows for.

The daemon makes the collector's passes rare (cli/daemon.py). That costs no memory only while the
work of a run makes no cyclic garbage, which only a pass would free: a retry loop or a timer that
refers back to itself, holding a commit's batch or a connection. This test runs a mix of completed
and compensated runs through the slow-step path (workers, call timeouts) with the collector off, and
looks at what only a pass would have freed.

The passes start after as many net allocations as a full house of runs holds (``OBJECTS_PER_RUN``
for each run in flight): a run heavier than that would have the collector pause the daemon as it
fills up, to find nothing.
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import replace

import anyio
import pytest

from sagad.cli.daemon import OBJECTS_PER_RUN
from sagad.content.pipeline import builtin_pipeline, with_latency
from sagad.domain.pipeline import StepContext, StepResult
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.helpers import running_daemon, wait_terminal
from tests.integration.test_pipeline import submit_mix

pytestmark = pytest.mark.anyio

RUNS = 300


async def test_runs_through_the_daemon_leave_no_cyclic_garbage(db: Database, runs: RunStore) -> None:
    pipeline = with_latency(builtin_pipeline(), lambda: 0.01)
    async with running_daemon(db, pipeline=pipeline):
        await wait_terminal(db, await submit_mix(runs, 20, fail_every=3))  # what starting up leaves
        gc.collect()
        gc.disable()
        try:
            outcomes = await submit_mix(runs, RUNS, fail_every=3)
            statuses = await wait_terminal(db, outcomes, seconds=60)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert Counter(statuses.values()) == {"completed": 200, "compensated": 100}
    ours = {name: count for name, count in garbage.items() if name.startswith("sagad.")}
    assert not ours, f"runs left cyclic garbage: {ours}"
    # Tenacity's retry loop alone left some 40 objects a commit; the test's own tasks may leave a few.
    assert sum(garbage.values()) < RUNS, garbage.most_common(10)


PARKED = 400


async def test_a_run_in_flight_holds_fewer_objects_than_the_collector_allows_for(db: Database, runs: RunStore) -> None:
    # Every run waits at the last step, with the outputs of all the others: the most a run holds.
    release, all_parked = anyio.Event(), anyio.Event()
    parking, parked = False, 0
    pipeline = with_latency(builtin_pipeline(), lambda: 0.001, concurrency=PARKED)
    deliver = pipeline.steps[-1]
    assert deliver.step is Step.DELIVER

    async def parked_delivery(ctx: StepContext) -> StepResult:
        nonlocal parked
        if parking:
            parked += 1
            if parked == PARKED:
                all_parked.set()
            await release.wait()
        return await deliver.call(ctx)

    pipeline = replace(pipeline, steps=(*pipeline.steps[:-1], replace(deliver, call=parked_delivery)))
    async with running_daemon(db, pipeline=pipeline):
        await wait_terminal(db, await submit_mix(runs, 20))  # what starting up leaves, and the workers
        parking = True
        gc.collect()
        before = len(gc.get_objects())
        outcomes = await submit_mix(runs, PARKED)
        with anyio.fail_after(60):
            await all_parked.wait()
        gc.collect()
        per_run = (len(gc.get_objects()) - before) / PARKED
        release.set()
        await wait_terminal(db, outcomes, seconds=60)
    assert 10 < per_run < OBJECTS_PER_RUN, f"{per_run:.0f} objects tracked a run in flight"
