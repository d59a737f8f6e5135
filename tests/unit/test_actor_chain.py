"""The whole actor chain on inboxes of size 1, half the runs failing: no deadlock, every run ends as it should."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest
from anyio.lowlevel import checkpoint

from sagad.actors.claimer import Claimer
from sagad.actors.compensator import Compensator
from sagad.actors.messages import Compensation, StepWork
from sagad.domain.pipeline import Pipeline, StepContext, StepResult, StepSpec, UndoContext
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import StepFailed
from tests.unit.fakes import FAST, ME, FakeWakeup, Scene, opened

pytestmark = pytest.mark.anyio

RUNS = 200
INBOX_SIZE = 1


def fails_at(n: int) -> Step | None:
    """Every other run fails, at each step in turn."""
    return Step.at(n // 2 % len(Step)) if n % 2 else None


def pipeline(undone: list[tuple[int, Step]]) -> Pipeline:
    """Five steps that write a row each; a run fails where its brief says; every step but the first waits."""

    def call_of(step: Step) -> StepSpec:
        async def call(ctx: StepContext) -> StepResult:
            if step is not Step.NORMALIZE_BRIEF:
                await checkpoint()
            if ctx.brief["fail_at"] == step.value:
                raise StepFailed(f"run {ctx.brief['n']} fails here")
            return StepResult(rows={step.tables[0]: [{"key": str(ctx.key(step.value))}]}, output=ctx.brief)

        async def undo(ctx: UndoContext) -> None:
            await checkpoint()
            undone.append((ctx.brief["n"], step))

        return StepSpec(step, call, undo=undo, retry=FAST, concurrency=3, instant=step.index % 2 == 0)

    return Pipeline(tuple(call_of(step) for step in Step))


async def test_no_deadlock_with_inboxes_of_size_one_and_half_the_runs_failing() -> None:
    scene = Scene(capacity=40)
    store, ledger, metrics = scene.store, scene.ledger, scene.metrics
    briefs = {n: {"n": n, "fail_at": (step := fails_at(n)) and step.value} for n in range(RUNS)}
    run_ids = {store.submit(brief): n for n, brief in briefs.items()}
    undone: list[tuple[int, Step]] = []
    specs = pipeline(undone).steps
    actors = [scene.actor(spec, batch_limit=8) for spec in specs]
    compensator = Compensator(store=store, ledger=ledger, metrics=metrics, batch_limit=8)
    claimer = Claimer(
        store=store,
        ledger=ledger,
        metrics=metrics,
        wakeup=FakeWakeup(),
        worker=ME,
        lease_seconds=30.0,
        claim_limit=16,
        poll_seconds=60.0,
        steps_store=store,
        max_attempts=5,
    )

    with anyio.fail_after(5):
        async with AsyncExitStack() as stack:
            forward = [opened(stack, StepWork, INBOX_SIZE) for _ in specs]
            backward = [opened(stack, Compensation, INBOX_SIZE) for _ in specs]
            to_compensator = opened(stack, Compensation, INBOX_SIZE)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(compensator.run, to_compensator[1])
            for i, actor in enumerate(actors):
                previous = backward[i - 1][0] if i else to_compensator[0]
                following = forward[i + 1][0] if i + 1 < len(actors) else None
                tg.start_soon(actor.relay.run, backward[i][1], previous)
                tg.start_soon(actor.run, forward[i][1], following, backward[i][0])
            tg.start_soon(claimer.run, [send for send, _ in forward], [send for send, _ in backward])

            await store.until(lambda: store.ended == RUNS)
            await ledger.wait_until_empty()

    completed = store.by_status(RunStatus.COMPLETED)
    compensated = store.by_status(RunStatus.COMPENSATED)
    assert {run_ids[run] for run in completed} == {n for n in range(RUNS) if fails_at(n) is None}
    assert {run_ids[run] for run in compensated} == {n for n in range(RUNS) if fails_at(n) is not None}
    for run_id in completed:
        assert {table: len(rows) for table, rows in store.runs[run_id].rows.items()} == {
            step.tables[0]: 1 for step in Step
        }
    for run_id in compensated:
        n = run_ids[run_id]
        failed = fails_at(n)
        assert failed is not None
        assert store.runs[run_id].rows == {}
        assert store.runs[run_id].last_error == f"{failed.value}: run {n} fails here"
        # the failed step failed cleanly: only the steps it passed are undone, last first
        assert [step for m, step in undone if m == n] == [step for step in reversed(Step) if step < failed]
    assert not any(n in {run_ids[run] for run in completed} for n, _ in undone)
    assert scene.sample("sagad_runs_total", outcome="completed") == RUNS // 2
    assert scene.sample("sagad_runs_total", outcome="compensated") == RUNS // 2
    assert scene.sample("sagad_leases_lost_total", found_by="step") == 0
    assert max(len(runs) for _, runs in store.step_commits) <= 8
