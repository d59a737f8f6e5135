"""The failure relay: tables collected on the way back, undos in reverse step order, undos that keep failing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.messages import Compensation, StepWork
from sagad.domain.pipeline import RetryPolicy, Undo, UndoContext
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from tests.unit.fakes import DEADLINE, Scene, echo, hold, opened, outputs_before, receive, spec_of

pytestmark = pytest.mark.anyio

SECOND = Step.GENERATE_STRATEGY


@pytest.fixture
def scene() -> Scene:
    return Scene()


async def failing_runs(scene: Scene, *failed: tuple[Step, bool]) -> list[Compensation]:
    """Held runs that failed at the given steps (with whether that step's undo runs), as relays get them."""
    failures = []
    for n, (step, undo_failed_step) in enumerate(failed):
        brief = {"n": n}
        run_id = scene.store.submit(
            brief, status=RunStatus.COMPENSATING, at=step, failed_step=step, outputs=outputs_before(step, brief)
        )
        [claimed] = await hold(scene.store, scene.ledger, 1)
        assert claimed.lease.run_id == run_id
        reason = f"{step.value}: no"
        failures.append(Compensation(claimed.lease, step, reason, brief, claimed.outputs, undo_failed_step))
    return failures


class Undos:
    """Undos that record what they were asked to take back, in the order asked."""

    def __init__(self) -> None:
        self.done: list[tuple[Step, UndoContext]] = []

    def of(self, step: Step) -> Undo:
        async def undo(ctx: UndoContext) -> None:
            await checkpoint()
            self.done.append((step, ctx))

        return undo


async def test_a_relay_adds_its_steps_tables_and_passes_the_failure_back(scene: Scene) -> None:
    relay = scene.relay(spec_of(Step.GENERATE_DRAFT, echo))
    [failure] = await failing_runs(scene, (Step.QC_EVALUATE, True))
    async with scene.relaying(relay) as (inbox, previous):
        await inbox.send(failure.including(frozenset(Step.QC_EVALUATE.tables)))
        [passed] = await receive(previous, 1)
    assert passed.tables == {
        "qc_results",
        "qc_issues",
        "production_drafts",
        "production_bundles",
        "production_bundle_assets",
    }
    assert (passed.lease, passed.failed_step, passed.reason) == (failure.lease, failure.failed_step, failure.reason)


@pytest.mark.parametrize(
    ("failed_step", "undo_failed_step", "undone"),
    [
        (Step.NORMALIZE_BRIEF, True, False),  # failed before this step ran
        (Step.GENERATE_STRATEGY, False, False),  # this step failed cleanly: nothing to take back
        (Step.GENERATE_STRATEGY, True, True),  # this step failed after it may have had an effect
        (Step.QC_EVALUATE, False, True),  # this step had completed
    ],
)
async def test_a_relay_undoes_its_step_only_where_the_step_had_an_effect(
    scene: Scene, failed_step: Step, undo_failed_step: bool, undone: bool
) -> None:
    undos = Undos()
    relay = scene.relay(spec_of(SECOND, echo, undo=undos.of(SECOND)))
    [failure] = await failing_runs(scene, (failed_step, undo_failed_step))
    async with scene.relaying(relay) as (inbox, previous):
        await inbox.send(failure)
        [passed] = await receive(previous, 1)
    assert passed.lease == failure.lease
    assert [step for step, _ in undos.done] == ([SECOND] if undone else [])
    if undone:
        [(_, ctx)] = undos.done
        assert ctx.run_id == failure.lease.run_id
        assert ctx.brief == failure.brief
        assert ctx.output == failure.outputs.get(SECOND)
        assert ctx.reason == failure.reason
        assert scene.sample("sagad_undo_total", step=SECOND.value, outcome="ok") == 1


Inbox = MemoryObjectSendStream[Compensation]


@asynccontextmanager
async def relay_chain(
    scene: Scene, undos: Undos
) -> AsyncIterator[tuple[list[Inbox], MemoryObjectReceiveStream[Compensation]]]:
    """A relay for every step, each passing back to the one before; the first to the returned end."""
    async with AsyncExitStack() as stack:
        streams = [opened(stack, Compensation, 1) for _ in range(len(Step) + 1)]
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        for step in Step:
            relay = scene.relay(spec_of(step, echo, undo=undos.of(step)))
            tg.start_soon(relay.run, streams[step.index + 1][1], streams[step.index][0])
        yield [send for send, _ in streams[1:]], streams[0][1]


async def test_the_undos_of_a_run_run_in_reverse_step_order_across_the_relays(scene: Scene) -> None:
    undos = Undos()
    failed = await failing_runs(scene, (Step.DELIVER, True), (Step.QC_EVALUATE, False), (Step.GENERATE_STRATEGY, True))
    with anyio.fail_after(DEADLINE):
        async with relay_chain(scene, undos) as (inboxes, compensator):
            for failure in failed:
                await inboxes[failure.failed_step.index].send(failure)
            passed = await receive(compensator, 3)

    assert {message.lease for message in passed} == {failure.lease for failure in failed}
    for failure, expected in zip(
        failed,
        [
            [Step.DELIVER, Step.QC_EVALUATE, Step.GENERATE_DRAFT, Step.GENERATE_STRATEGY, Step.NORMALIZE_BRIEF],
            [Step.GENERATE_DRAFT, Step.GENERATE_STRATEGY, Step.NORMALIZE_BRIEF],
            [Step.GENERATE_STRATEGY, Step.NORMALIZE_BRIEF],
        ],
        strict=True,
    ):
        assert [step for step, ctx in undos.done if ctx.run_id == failure.lease.run_id] == expected
    tables = {message.lease: message.tables for message in passed}
    assert tables[failed[0].lease] == {table for step in Step for table in step.tables}


async def test_an_undo_that_keeps_failing_gives_the_run_back_with_why(scene: Scene) -> None:
    attempts = 0

    async def broken(ctx: UndoContext) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("the mail server refused the recall")

    relay = scene.relay(spec_of(SECOND, echo, undo=broken, retry=RetryPolicy(2, 0.001, 0.001, 0.0)))
    stuck, other = await failing_runs(scene, (Step.DELIVER, True), (Step.NORMALIZE_BRIEF, True))
    async with scene.relaying(relay) as (inbox, previous):
        await inbox.send(stuck)
        await inbox.send(other)
        [passed] = await receive(previous, 1)
        await scene.store.until(lambda: stuck.lease.run_id in scene.store.deferred)

    assert passed.lease == other.lease
    assert attempts == 2
    reason = (
        "undo of generate_strategy: gave up after 2 attempts (claim 1):"
        " RuntimeError: the mail server refused the recall"
    )
    assert scene.store.deferred == {stuck.lease.run_id: reason}
    assert not scene.ledger.holds(stuck.lease)
    assert scene.store.runs[stuck.lease.run_id].status is RunStatus.COMPENSATING  # nothing deleted
    assert scene.sample("sagad_undo_total", step=SECOND.value, outcome="retried") == 1
    assert scene.sample("sagad_undo_total", step=SECOND.value, outcome="failed") == 1


async def test_an_undo_whose_lease_is_lost_is_cancelled_and_the_run_not_passed_back(scene: Scene) -> None:
    started = anyio.Event()

    async def slow(ctx: UndoContext) -> None:
        started.set()
        await anyio.sleep_forever()

    relay = scene.relay(spec_of(SECOND, echo, undo=slow))
    lost, other = await failing_runs(scene, (Step.DELIVER, True), (Step.NORMALIZE_BRIEF, True))
    async with scene.relaying(relay) as (inbox, previous):
        await inbox.send(lost)
        await started.wait()
        scene.ledger.lose([lost.lease], "renewal")
        await inbox.send(other)
        [passed] = await receive(previous, 1)
    assert passed.lease == other.lease
    assert relay.abandon() == []
    assert scene.sample("sagad_fenced_writes_total", stage="compensation") == 1


async def test_failures_pass_back_while_the_steps_forward_inbox_is_full(scene: Scene) -> None:
    """The relay never waits on forward traffic: a stalled next step does not hold up the way back."""
    actor = scene.actor(spec_of(SECOND, echo))
    works = await scene.runs_at(SECOND, [{"n": n} for n in range(3)])
    failed = await failing_runs(scene, *[(Step.QC_EVALUATE, True)] * 5)
    async with AsyncExitStack() as stack:
        inbox_in, inbox = opened(stack, StepWork, 10)
        forward_in, _ = opened(stack, StepWork, 0)  # nobody reads it
        relay_in, relay_inbox = opened(stack, Compensation, 1)
        previous_in, previous = opened(stack, Compensation, 1)
        stack.enter_context(anyio.fail_after(DEADLINE))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(actor.run, inbox, forward_in, relay_in)
        tg.start_soon(actor.relay.run, relay_inbox, previous_in)
        for work in works:
            await inbox_in.send(work)
        await scene.store.until(lambda: len(scene.store.step_commits) >= 1)  # the committer now waits on forward

        async def fail_back() -> None:
            for failure in failed:
                await relay_in.send(failure)

        tg.start_soon(fail_back)
        passed = await receive(previous, len(failed))
        assert forward_in.statistics().tasks_waiting_send == 1

    assert [message.lease for message in passed] == [failure.lease for failure in failed]


async def test_a_relay_that_crashed_gives_back_the_runs_it_held(scene: Scene) -> None:
    started = anyio.Event()

    async def slow(ctx: UndoContext) -> None:
        started.set()
        await anyio.sleep_forever()

    relay = scene.relay(spec_of(SECOND, echo, undo=slow))
    [held] = await failing_runs(scene, (Step.DELIVER, True))
    async with scene.relaying(relay) as (inbox, _):
        await inbox.send(held)
        await started.wait()
        assert relay.abandon() == [held.lease]
    assert relay.abandon() == []
