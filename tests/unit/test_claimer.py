"""The claimer: claims what the ledger has room for and routes each run to where it stands."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.streams.memory import MemoryObjectReceiveStream

from sagad.actors.claimer import Claimer
from sagad.actors.messages import Compensation, StepWork
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import TransientDatabaseError
from tests.unit.fakes import DEADLINE, ME, FakeReadiness, FakeWakeup, Scene, opened, outputs_before, receive

pytestmark = pytest.mark.anyio

MAX_ATTEMPTS = 3


@dataclass
class Routes:
    """The inboxes the claimer routes to, read by the test."""

    steps: list[MemoryObjectReceiveStream[StepWork]]
    failures: list[MemoryObjectReceiveStream[Compensation]]
    wakeup: FakeWakeup
    readiness: FakeReadiness


@asynccontextmanager
async def claiming(scene: Scene, claim_limit: int = 10) -> AsyncIterator[Routes]:
    wakeup, readiness = FakeWakeup(), FakeReadiness()
    claimer = Claimer(
        store=scene.store,
        ledger=scene.ledger,
        metrics=scene.metrics,
        wakeup=wakeup,
        worker=ME,
        lease_seconds=30.0,
        claim_limit=claim_limit,
        poll_seconds=10.0,
        steps_store=scene.store,
        max_attempts=MAX_ATTEMPTS,
        readiness=readiness,
    )
    async with AsyncExitStack() as stack:
        steps = [opened(stack, StepWork, 100) for _ in Step]
        failures = [opened(stack, Compensation, 100) for _ in Step]
        stack.enter_context(anyio.fail_after(DEADLINE))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(claimer.run, [send for send, _ in steps], [send for send, _ in failures])
        yield Routes([r for _, r in steps], [r for _, r in failures], wakeup, readiness)


@pytest.fixture
def scene() -> Scene:
    return Scene()


async def test_running_runs_go_to_the_inbox_of_their_next_step_with_their_outputs(scene: Scene) -> None:
    new = scene.store.submit({"client": "acme"})
    normalized = {"client": "ACME"}
    at_qc = scene.store.submit(
        {"client": "acme"},
        status=RunStatus.RUNNING,
        at=Step.QC_EVALUATE,
        outputs=outputs_before(Step.QC_EVALUATE, normalized),
    )
    async with claiming(scene) as routes:
        [first] = await receive(routes.steps[0], 1)
        [qc] = await receive(routes.steps[Step.QC_EVALUATE.index], 1)

    assert first.lease == scene.store.lease(new)
    assert json.loads(first.submitted) == {"client": "acme"}  # as stored: the first step decodes it
    assert first.outputs == {}
    assert qc.lease == scene.store.lease(at_qc)
    assert qc.brief == normalized
    assert qc.outputs == outputs_before(Step.QC_EVALUATE, normalized)
    assert scene.ledger.holds(first.lease)
    assert scene.ledger.holds(qc.lease)
    assert scene.sample("sagad_claims_total") == 2
    assert routes.readiness.reports == ["claim_succeeded"]


async def test_compensating_runs_go_to_the_relay_of_their_failed_step_with_their_outputs(scene: Scene) -> None:
    outputs = outputs_before(Step.DELIVER, {"client": "ACME"})
    run_id = scene.store.submit(
        {"client": "acme"},
        status=RunStatus.COMPENSATING,
        at=Step.DELIVER,
        failed_step=Step.DELIVER,
        last_error="deliver: rejected",
        outputs=outputs,
        attempts=MAX_ATTEMPTS + 5,  # a compensation is always finished, however often it was claimed
    )
    async with claiming(scene) as routes:
        [failure] = await receive(routes.failures[Step.DELIVER.index], 1)

    assert failure.lease == scene.store.lease(run_id)
    assert (failure.failed_step, failure.reason) == (Step.DELIVER, "deliver: rejected")
    assert failure.brief == {"client": "ACME"}
    assert failure.outputs == outputs
    assert failure.undo_failed_step
    assert failure.tables == frozenset()
    assert scene.sample("sagad_poison_runs_total") == 0


async def test_a_run_claimed_too_often_is_failed_at_its_step_as_poison(scene: Scene) -> None:
    healthy = scene.store.submit({}, status=RunStatus.RUNNING, at=Step.QC_EVALUATE, attempts=MAX_ATTEMPTS - 1)
    poison = scene.store.submit({}, status=RunStatus.RUNNING, at=Step.QC_EVALUATE, attempts=MAX_ATTEMPTS)
    async with claiming(scene) as routes:
        [work] = await receive(routes.steps[Step.QC_EVALUATE.index], 1)
        [failure] = await receive(routes.failures[Step.QC_EVALUATE.index], 1)

    assert work.lease.run_id == healthy
    assert failure.lease.run_id == poison
    reason = "qc_evaluate: poison run: claimed 4 times without finishing (limit 3)"
    assert failure.reason == reason
    assert failure.failed_step is Step.QC_EVALUATE
    stored = scene.store.runs[poison]
    assert (stored.status, stored.failed_step, stored.last_error) == (RunStatus.COMPENSATING, Step.QC_EVALUATE, reason)
    assert scene.sample("sagad_poison_runs_total") == 1


async def test_a_poison_run_taken_over_meanwhile_is_lost_not_routed(scene: Scene) -> None:
    poison = scene.store.submit({}, status=RunStatus.RUNNING, at=Step.GENERATE_DRAFT, attempts=MAX_ATTEMPTS)
    gate = scene.store.gate("commit_step")
    async with claiming(scene):
        await gate.entered.wait()
        scene.store.take_over(poison)
        gate.open()
        await scene.ledger.wait_until_empty()
    assert scene.sample("sagad_leases_lost_total", found_by="step") == 1
    assert scene.sample("sagad_poison_runs_total") == 0


async def test_the_claimer_claims_only_what_the_ledger_has_room_for_a_batch_at_a_time(scene: Scene) -> None:
    scene.ledger.capacity = 2
    runs = [scene.store.submit({"n": n}) for n in range(5)]
    async with claiming(scene) as routes:
        first = await receive(routes.steps[0], 2)
        assert scene.store.runs[runs[2]].claimed_by is None
        scene.ledger.finish(first[0].lease, RunStatus.COMPLETED, 0.1)
        await wait_all_tasks_blocked()
        assert scene.store.runs[runs[2]].claimed_by is None  # one free slot is not a batch's worth
        scene.ledger.finish(first[1].lease, RunStatus.COMPLETED, 0.1)
        more = await receive(routes.steps[0], 2)
    assert [work.lease.run_id for work in [*first, *more]] == runs[:4]
    assert scene.sample("sagad_claims_total") == 4


async def test_a_claim_that_finds_nothing_waits_for_a_wakeup(scene: Scene) -> None:
    async with claiming(scene) as routes:
        await routes.wakeup.waiting.wait()
        run_id = scene.store.submit({})
        routes.wakeup.wake()
        [work] = await receive(routes.steps[0], 1)
    assert work.lease.run_id == run_id


async def test_a_claim_whose_answer_was_lost_is_taken_up_on_the_retry(scene: Scene) -> None:
    runs = [scene.store.submit({"n": n}) for n in range(3)]
    scene.store.fail("claim", TransientDatabaseError, answer_lost=True)
    async with claiming(scene) as routes:
        routed = await receive(routes.steps[0], 3)
    assert {work.lease.run_id for work in routed} == set(runs)
    assert all(scene.ledger.holds(work.lease) for work in routed)
    assert routes.readiness.reports == ["claim_failed", "claim_succeeded"]
    assert scene.sample("sagad_db_errors_total", kind="transient") == 1
