"""Every lost lease is counted, however it is found: here, by a step or compensation write the fence refused.

A fenced write drops the run before any renewal can see it lost; SagadLeasesLost fires on
``sagad_leases_lost_total``, so these must count there too.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import Lease, WorkerId
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.supervisor import Supervisor
from tests.chaos.waiting import wait_until
from tests.helpers import running_daemon

pytestmark = pytest.mark.anyio

RUNS = 4


class _HoldAfter:
    """Holds a step's runs after its commit until released, so that a thief can take them meanwhile."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.reached = anyio.Event()
        self.released = anyio.Event()

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None:
        if step is self.step:
            self.reached.set()
            await self.released.wait()


# The runs held past the step (or failed at it), taken by another daemon under a new token.
_STEAL = """
    UPDATE workflow_runs SET claimed_by = 'thief', lease_token = lease_token + 1,
                             available_at = now() + interval '1 hour'
    WHERE claimed_by = 'robbed' AND (status = 'running' AND next_step > $1 OR status = 'compensating')
    RETURNING id
"""


def _sample(daemon: Supervisor, name: str, **labels: str) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


async def _robbed_at(db: Database, runs: RunStore, step: Step, ending: Ending) -> tuple[int, float, float]:
    """Runs of ``ending`` taken from a daemon while it holds them after ``step``: how many, its fenced
    writes, and the leases it counted lost."""
    await runs.submit_many([(sample_brief(ending, n), None) for n in range(RUNS)])
    hold = _HoldAfter(step)
    async with running_daemon(db, worker="robbed", lease_seconds=600, faults=hold) as daemon:
        await hold.reached.wait()
        stolen = len(await db.fetch(_STEAL, step.index))
        hold.released.set()

        async def done() -> bool:
            return len(daemon.ledger) == 0

        await wait_until(done, seconds=10)
        fenced = sum(_sample(daemon, "sagad_fenced_writes_total", stage=s) for s in ("step", "compensation"))
        lost = sum(_sample(daemon, "sagad_leases_lost_total", found_by=f) for f in ("step", "compensation"))
    assert await runs.claim(WorkerId("nobody"), 10, 60) == []
    return stolen, fenced, lost


async def test_leases_found_lost_by_a_fenced_step_write_are_counted(db: Database, runs: RunStore) -> None:
    stolen, fenced, lost = await _robbed_at(db, runs, Step.NORMALIZE_BRIEF, Ending.COMPLETED)
    assert stolen > 0
    assert fenced == stolen
    assert lost == stolen


async def test_leases_found_lost_by_a_fenced_compensation_are_counted(db: Database, runs: RunStore) -> None:
    stolen, fenced, lost = await _robbed_at(db, runs, Step.QC_EVALUATE, Ending.QC_FAIL)
    assert stolen > 0
    assert fenced == stolen
    assert lost == stolen
