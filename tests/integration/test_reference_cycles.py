"""Runs leave no reference cycles behind: what they allocate is freed as soon as they are done with it.

The daemon makes the collector's passes rare (cli/daemon.py). That costs no memory only while the
work of a run makes no cyclic garbage, which only a pass would free: a retry loop or a timer that
refers back to itself, holding a commit's batch or a connection. This test runs a mix of completed
and compensated runs through the slow-step path (workers, call timeouts) with the collector off, and
looks at what only a pass would have freed.
"""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from sagad.content.pipeline import builtin_pipeline, with_latency
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
