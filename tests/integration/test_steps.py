"""Real steps against a real database: outputs handed on and kept, timeouts, retries, concurrency,
undos in reverse order before the DELETE, and calls whose lease is lost."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import anyio
import pytest

from sagad.content.pipeline import builtin_pipeline, walk
from sagad.content.samples import Ending, sample_brief
from sagad.domain.pipeline import Pipeline, RetryPolicy, StepCall, StepContext, StepResult, UndoContext
from sagad.domain.rows import row_key
from sagad.domain.runs import RunId, RunStatus
from sagad.domain.steps import Step
from sagad.errors import TransientStepError
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.waiting import wait_count, wait_until
from tests.helpers import TABLES, expected_rows, rows_of, running_daemon, shown, wait_terminal

pytestmark = pytest.mark.anyio

BUILTIN = builtin_pipeline()
QUICK = RetryPolicy(attempts=2, first_wait_seconds=0.001, max_wait_seconds=0.01, jitter_seconds=0.001)


def changed(pipeline: Pipeline, step: Step, **changes: Any) -> Pipeline:
    """``pipeline`` with one step's spec changed."""
    steps = tuple(replace(spec, **changes) if spec.step is step else spec for spec in pipeline.steps)
    return replace(pipeline, steps=steps)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def submit(runs: RunStore, ending: Ending, count: int, first_seed: int = 0) -> list[RunId]:
    return [(await runs.submit(sample_brief(ending, seed)))[0] for seed in range(first_seed, first_seed + count)]


async def stored_outputs(db: Database, run_id: RunId) -> dict[Step, Any]:
    rows = await db.fetch("SELECT step, output FROM step_outputs WHERE run_id = $1", run_id)
    return {Step.at(row["step"]): row["output"] for row in rows}


async def test_a_run_resumed_by_another_daemon_gets_exactly_the_outputs_committed(db: Database, runs: RunStore) -> None:
    run_ids = await submit(runs, Ending.COMPLETED, 5)
    never = anyio.Event()

    async def stuck(ctx: StepContext) -> StepResult:
        await never.wait()
        raise AssertionError("unreachable")

    first = changed(BUILTIN, Step.GENERATE_DRAFT, call=stuck, instant=False)
    async with running_daemon(db, worker="first", pipeline=first, drain_seconds=0):
        await wait_count(db, "SELECT count(*) FROM step_outputs", 2 * len(run_ids), seconds=20)
    committed = {run_id: await stored_outputs(db, run_id) for run_id in run_ids}

    seen: dict[RunId, tuple[Any, dict[Step, Any]]] = {}
    write = BUILTIN.spec(Step.GENERATE_DRAFT).call

    async def recording(ctx: StepContext) -> StepResult:
        seen[ctx.run_id] = (ctx.brief, dict(ctx.outputs))
        return await write(ctx)

    second = changed(BUILTIN, Step.GENERATE_DRAFT, call=recording)
    async with running_daemon(db, worker="second", pipeline=second):
        assert set((await wait_terminal(db, run_ids)).values()) == {"completed"}

    for seed, run_id in enumerate(run_ids):
        walked = await walk(BUILTIN, run_id, sample_brief(Ending.COMPLETED, seed))
        brief, outputs = seen[run_id]
        assert set(committed[run_id]) == {Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY}
        assert outputs == committed[run_id]
        assert brief == committed[run_id][Step.NORMALIZE_BRIEF]
        assert outputs[Step.GENERATE_STRATEGY] == walked.results[1].output
        assert await rows_of(db, run_id) == await expected_rows(run_id, sample_brief(Ending.COMPLETED, seed))
    assert set(await stored_outputs(db, run_ids[0])) == set(Step)


async def test_a_later_step_sees_the_same_output_straight_through_and_after_a_takeover(
    db: Database, runs: RunStore
) -> None:
    """A UUID, a tuple and keys out of sorted order arrive as the committed JSON decodes them, on both paths."""
    run_ids = await submit(runs, Ending.COMPLETED, 4)
    straight, resumed = run_ids[:2], run_ids[2:]
    write_strategy = BUILTIN.spec(Step.GENERATE_STRATEGY).call
    write_draft = BUILTIN.spec(Step.GENERATE_DRAFT).call

    async def odd_output(ctx: StepContext) -> StepResult:
        result = await write_strategy(ctx)
        odd = {"zeta": ctx.key("plan"), "alpha": (1, 2), "mid": {"b": 1, "a": 2}, "real": result.output}
        return StepResult(result.rows, odd)

    seen: dict[RunId, Any] = {}
    never = anyio.Event()

    async def draft(ctx: StepContext) -> StepResult:
        output = ctx.outputs[Step.GENERATE_STRATEGY]
        seen[ctx.run_id] = (repr(output["zeta"]), repr(output["alpha"]), list(output), list(output["mid"]))
        return await write_draft(replace(ctx, outputs={**ctx.outputs, Step.GENERATE_STRATEGY: output["real"]}))

    async def stuck_for_resumed(ctx: StepContext) -> StepResult:
        if ctx.run_id in resumed:
            await never.wait()
        return await draft(ctx)

    strange = changed(BUILTIN, Step.GENERATE_STRATEGY, call=odd_output)
    first = changed(strange, Step.GENERATE_DRAFT, call=stuck_for_resumed, instant=False)
    async with running_daemon(db, worker="first", pipeline=first, drain_seconds=0):
        await wait_terminal(db, straight)
        await wait_count(db, "SELECT count(*) FROM step_outputs", 5 * len(straight) + 2 * len(resumed), seconds=20)
    second = changed(strange, Step.GENERATE_DRAFT, call=draft)
    async with running_daemon(db, worker="second", pipeline=second):
        assert set((await wait_terminal(db, run_ids)).values()) == {"completed"}

    for run_id in run_ids:
        key = repr(str(row_key(run_id, "plan")))
        assert seen[run_id] == (key, "[1, 2]", ["zeta", "alpha", "mid", "real"], ["b", "a"]), run_id


async def test_a_step_that_times_out_is_retried_then_fails_the_run_naming_its_timeout(
    db: Database, runs: RunStore
) -> None:
    async def slow(ctx: StepContext) -> StepResult:
        await anyio.sleep(5)
        raise AssertionError("unreachable")

    pipeline = changed(BUILTIN, Step.GENERATE_STRATEGY, call=slow, instant=False, timeout_seconds=0.05, retry=QUICK)
    run_ids = await submit(runs, Ending.COMPLETED, 3)
    async with running_daemon(db, pipeline=pipeline) as daemon:
        assert set((await wait_terminal(db, run_ids)).values()) == {"compensated"}
        retried = sample(daemon.metrics, "sagad_step_retries_total", step="generate_strategy", reason="timeout")
    assert retried == len(run_ids)  # two attempts each: one retry
    status = await shown(db, run_ids[0])
    assert status is not None
    assert status.last_error == "generate_strategy: gave up after 2 attempts (claim 1): timed out after 0.05 s"
    assert await rows_of(db, run_ids[0]) == dict.fromkeys(TABLES, 0)


async def test_a_transient_failure_is_retried_and_the_run_goes_on(db: Database, runs: RunStore) -> None:
    attempts: dict[RunId, int] = defaultdict(int)
    plan = BUILTIN.spec(Step.GENERATE_STRATEGY).call

    async def flaky(ctx: StepContext) -> StepResult:
        attempts[ctx.run_id] += 1
        assert ctx.attempt == attempts[ctx.run_id]
        if ctx.attempt < 3:
            raise TransientStepError("planner busy (429)")
        return await plan(ctx)

    retry = RetryPolicy(attempts=3, first_wait_seconds=0.001, max_wait_seconds=0.01)
    pipeline = changed(BUILTIN, Step.GENERATE_STRATEGY, call=flaky, instant=False, retry=retry)
    run_ids = await submit(runs, Ending.COMPLETED, 4)
    async with running_daemon(db, pipeline=pipeline) as daemon:
        assert set((await wait_terminal(db, run_ids)).values()) == {"completed"}
        retried = sample(daemon.metrics, "sagad_step_retries_total", step="generate_strategy", reason="transient")
    assert set(attempts.values()) == {3}
    assert retried == 2 * len(run_ids)


async def test_no_more_calls_of_a_step_are_in_flight_than_its_concurrency(db: Database, runs: RunStore) -> None:
    running = 0
    most = 0
    write = BUILTIN.spec(Step.GENERATE_DRAFT).call

    async def counted(ctx: StepContext) -> StepResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await anyio.sleep(0.03)
            return await write(ctx)
        finally:
            running -= 1

    pipeline = changed(BUILTIN, Step.GENERATE_DRAFT, call=counted, instant=False, concurrency=3)
    run_ids = await submit(runs, Ending.COMPLETED, 20)
    async with running_daemon(db, pipeline=pipeline):
        assert set((await wait_terminal(db, run_ids)).values()) == {"completed"}
    assert most == 3


def recording_undos(pipeline: Pipeline, undone: list[tuple[Step, RunId, Any]]) -> Pipeline:
    """Every step of ``pipeline`` with an undo that records (step, run, the output it was given)."""

    def undo_of(step: Step) -> Any:
        async def undo(ctx: UndoContext) -> None:
            undone.append((step, ctx.run_id, ctx.output))

        return undo

    return replace(pipeline, steps=tuple(replace(spec, undo=undo_of(spec.step)) for spec in pipeline.steps))


async def test_the_undos_of_the_steps_that_completed_run_in_reverse_order_before_the_delete(
    db: Database, runs: RunStore
) -> None:
    undone: list[tuple[Step, RunId, Any]] = []
    run_ids = await submit(runs, Ending.DELIVERY_FAIL, 3)
    async with running_daemon(db, pipeline=recording_undos(BUILTIN, undone)):
        assert set((await wait_terminal(db, run_ids)).values()) == {"compensated"}
    for seed, run_id in enumerate(run_ids):
        steps = [step for step, run, _ in undone if run == run_id]
        # delivery refused the package (a clean failure): its own undo has nothing to take back
        assert steps == [Step.QC_EVALUATE, Step.GENERATE_DRAFT, Step.GENERATE_STRATEGY, Step.NORMALIZE_BRIEF]
        outputs = {step: output for step, run, output in undone if run == run_id}
        walked = await walk(BUILTIN, run_id, sample_brief(Ending.DELIVERY_FAIL, seed))
        assert [outputs[step] for step in tuple(Step)[:-1]] == [result.output for result in walked.results]
        assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)


async def test_a_step_that_gave_up_after_transient_failures_is_undone_too(db: Database, runs: RunStore) -> None:
    undone: list[tuple[Step, RunId, Any]] = []

    async def unreachable(ctx: StepContext) -> StepResult:
        raise TransientStepError("CMS timed out")  # it may have published before the answer was lost

    pipeline = changed(recording_undos(BUILTIN, undone), Step.DELIVER, call=unreachable, instant=False, retry=QUICK)
    [run_id] = await submit(runs, Ending.COMPLETED, 1)
    async with running_daemon(db, pipeline=pipeline):
        assert await wait_terminal(db, [run_id]) == {run_id: "compensated"}
    assert [step for step, _, _ in undone] == [Step.DELIVER, *reversed(tuple(Step)[:-1])]
    assert undone[0][2] is None  # the failed step committed no output


async def test_an_undo_that_keeps_failing_leaves_the_run_compensating_with_its_rows_then_finishes(
    db: Database, runs: RunStore
) -> None:
    healthy = anyio.Event()
    tries = 0

    async def cancel_campaign(ctx: UndoContext) -> None:
        nonlocal tries
        tries += 1
        if not healthy.is_set():
            raise TransientStepError("ads service down")

    pipeline = changed(BUILTIN, Step.GENERATE_STRATEGY, undo=cancel_campaign, retry=QUICK)
    [run_id] = await submit(runs, Ending.QC_FAIL, 1)
    async with running_daemon(db, pipeline=pipeline, undo_retry_seconds=0.3) as daemon:
        held_up = "SELECT count(*) FROM workflow_runs WHERE compensation_error IS NOT NULL"
        await wait_count(db, held_up, 1, seconds=20)
        status = await shown(db, run_id)
        assert status is not None
        assert status.status is RunStatus.COMPENSATING
        assert status.compensation_error == (
            "undo of generate_strategy: gave up after 2 attempts (claim 1): ads service down"
        )
        assert status.last_error is not None
        assert status.last_error.startswith("qc_evaluate: QC score")
        assert (await rows_of(db, run_id))["strategy_document"] == 1, "a compensation was half done"
        assert sample(daemon.metrics, "sagad_undo_total", step="generate_strategy", outcome="failed") >= 1
        healthy.set()
        assert await wait_terminal(db, [run_id], seconds=20) == {run_id: "compensated"}
    status = await shown(db, run_id)
    assert status is not None
    assert status.compensation_error is None
    assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)
    assert tries >= 3


async def test_a_call_whose_lease_is_lost_is_cancelled_and_writes_nothing(db: Database, runs: RunStore) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def waits(ctx: StepContext) -> StepResult:
        started.set()
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    pipeline = changed(BUILTIN, Step.GENERATE_DRAFT, call=waits, instant=False, timeout_seconds=120)
    [run_id] = await submit(runs, Ending.COMPLETED, 1)
    async with running_daemon(db, pipeline=pipeline, lease_seconds=0.9) as daemon:
        with anyio.fail_after(10):
            await started.wait()
        # Another daemon takes the run over with a new token, in one statement: a renewal between an
        # expiry and a claim would otherwise win the run back (it renews every 0.3 s).
        taken = await db.fetch(
            "UPDATE workflow_runs SET claimed_by = 'thief', lease_token = lease_token + 1,"
            " available_at = now() + interval '60 seconds' WHERE id = $1 RETURNING id",
            run_id,
        )
        assert [row["id"] for row in taken] == [run_id]
        with anyio.fail_after(10):
            await cancelled.wait()

        async def counted() -> bool:
            return sample(daemon.metrics, "sagad_fenced_writes_total", stage="call") >= 1

        await wait_until(counted, seconds=10)
        assert sample(daemon.metrics, "sagad_leases_lost_total", found_by="renewal") == 1
        assert run_id not in {lease.run_id for lease in daemon.ledger.snapshot()}
    status = await shown(db, run_id)
    assert status is not None
    assert (status.claimed_by, status.current_step) == ("thief", "generate_draft")
    assert set(await stored_outputs(db, run_id)) == {Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY}


async def test_a_step_writing_another_steps_table_fails_its_run_and_the_daemon_goes_on(
    db: Database, runs: RunStore
) -> None:
    write: StepCall = BUILTIN.spec(Step.GENERATE_DRAFT).call

    async def trespassing(ctx: StepContext) -> StepResult:
        result = await write(ctx)
        return StepResult({**result.rows, "qc_results": []}, result.output)

    pipeline = changed(BUILTIN, Step.GENERATE_DRAFT, call=trespassing, retry=QUICK)
    bad = await submit(runs, Ending.COMPLETED, 2)
    async with running_daemon(db, pipeline=pipeline) as daemon:
        assert set((await wait_terminal(db, bad)).values()) == {"compensated"}
        restarts = sum(sample(daemon.metrics, "sagad_actor_restarts_total", actor=step.value) for step in Step)
    status = await shown(db, bad[0])
    assert status is not None
    assert status.last_error is not None
    assert "returned rows for ['qc_results'], which it does not own" in status.last_error
    assert restarts == 0
