"""A claim that committed but whose answer was lost: its runs are taken up at once, not after the lease."""

from __future__ import annotations

import anyio
import pytest

from sagad.actors.claimer import Claimer
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, StepWork
from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import ClaimedRun, WorkerId
from sagad.domain.steps import Step
from sagad.errors import TransientDatabaseError
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore

pytestmark = pytest.mark.anyio

WORKER = WorkerId("answer-lost")
LEASE_SECONDS = 600.0  # far longer than the test waits: only adoption can bring the runs back in time


class _FirstAnswerLost(RunStore):
    """The real store, except that the first claim commits and then its answer never arrives."""

    lost = 0

    async def claim(self, worker: WorkerId, limit: int, lease_seconds: float) -> list[ClaimedRun]:
        claimed = await super().claim(worker, limit, lease_seconds)
        if claimed and not self.lost:
            self.lost = len(claimed)
            raise TransientDatabaseError("ConnectionResetError: the claim's answer was lost")
        return claimed


class _Sleep:
    async def wait(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def test_runs_of_a_claim_whose_answer_was_lost_are_routed_under_that_claim(db: Database) -> None:
    store = _FirstAnswerLost(db)
    briefs = [(sample_brief(Ending.COMPLETED, n), None) for n in range(3)]
    submitted = {run_id for run_id, _ in await store.submit_many(briefs)}
    metrics = Metrics()
    claimer = Claimer(
        store=store,
        ledger=Ledger(100, metrics),
        metrics=metrics,
        wakeup=_Sleep(),
        worker=WORKER,
        lease_seconds=LEASE_SECONDS,
        claim_limit=10,
        poll_seconds=0.05,
        steps_store=StepStore(db, WORKER),
        max_attempts=5,
    )
    forward = [anyio.create_memory_object_stream[StepWork](10) for _ in Step]
    backward = [anyio.create_memory_object_stream[Compensation](10) for _ in Step]

    routed: list[StepWork] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(claimer.run, [send for send, _ in forward], [send for send, _ in backward])
        with anyio.fail_after(10):
            while len(routed) < len(submitted):
                routed.append(await forward[0][1].receive())
        tg.cancel_scope.cancel()
    for streams in (forward, backward):
        for send, receive in streams:
            send.close()
            receive.close()

    assert store.lost == len(submitted)
    assert {work.lease.run_id for work in routed} == submitted
    rows = await db.fetch("SELECT id, lease_token, attempts, claimed_by FROM workflow_runs")
    in_database = {row["id"]: (row["lease_token"], row["attempts"], row["claimed_by"]) for row in rows}
    # Each run was claimed once, by the claim whose answer was lost, and is routed under its token.
    for work in routed:
        assert in_database[work.lease.run_id] == (work.lease.token, 1, WORKER)
