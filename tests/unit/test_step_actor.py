"""A step actor against the fake store: group commit, concurrency, hand-off, failures, retries, fencing."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from sagad.actors.messages import StepWork
from sagad.domain.pipeline import RetryPolicy, StepContext, StepResult
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import PermanentDatabaseError, StepFailed, TransientDatabaseError, TransientStepError
from tests.unit.fakes import Scene, echo, hold, outputs_before, receive, spec_of, work_of

pytestmark = pytest.mark.anyio

FIRST, SECOND, LAST = Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY, Step.DELIVER


@pytest.fixture
def scene() -> Scene:
    return Scene()


def counting(n: int) -> tuple[Any, anyio.Event]:
    """A step like ``echo`` that sets the event returned with it once it has been called ``n`` times."""
    called = anyio.Event()
    calls = 0

    async def call(ctx: StepContext) -> StepResult:
        nonlocal calls
        calls += 1
        if calls == n:
            called.set()  # the actor records the call as finished before it next yields
        return StepResult(output=ctx.brief)

    return call, called


async def test_runs_that_finish_during_a_commit_are_committed_together_in_the_next(scene: Scene) -> None:
    step, all_called = counting(4)
    actor = scene.actor(spec_of(SECOND, step, instant=True))
    first, *rest = await scene.runs_at(SECOND, [{"n": n} for n in range(4)])
    gate = scene.store.gate("commit_step")
    async with scene.running(actor) as lanes:
        await lanes.inbox.send(first)
        await gate.entered.wait()
        for work in rest:
            await lanes.inbox.send(work)
        await all_called.wait()  # the three called and finished while the first commit is in flight
        gate.open()
        forwarded = await receive(lanes.forward, 4)

    assert scene.store.step_commits == [
        (SECOND, [first.lease.run_id]),
        (SECOND, [work.lease.run_id for work in rest]),
    ]
    assert [work.lease for work in forwarded] == [first.lease, *(work.lease for work in rest)]


async def test_a_commit_never_takes_more_than_the_batch_limit(scene: Scene) -> None:
    step, all_called = counting(10)
    actor = scene.actor(spec_of(SECOND, step), batch_limit=3)
    works = await scene.runs_at(SECOND, [{"n": n} for n in range(10)])
    gate = scene.store.gate("commit_step")
    async with scene.running(actor, pending=works) as lanes:
        await gate.entered.wait()
        await all_called.wait()  # seven runs finished while the first commit is in flight
        gate.open()
        forwarded = await receive(lanes.forward, 10)

    sizes = [len(runs) for _, runs in scene.store.step_commits]
    assert sizes == [3, 3, 3, 1]
    assert {work.lease for work in forwarded} == {work.lease for work in works}


async def test_a_batch_is_taken_once_a_commit_connection_is_free_and_holds_every_run_finished_meanwhile(
    scene: Scene,
) -> None:
    step, all_called = counting(5)
    slots = anyio.Semaphore(1)
    actor = scene.actor(spec_of(SECOND, step, instant=True), commit_slots=slots)
    works = await scene.runs_at(SECOND, [{"n": n} for n in range(5)])
    await slots.acquire()  # another step's commit has the one connection
    async with scene.running(actor) as lanes:
        for work in works:
            await lanes.inbox.send(work)
        await all_called.wait()
        await anyio.wait_all_tasks_blocked()
        assert scene.store.step_commits == []  # waiting for the connection, not committing the first alone
        slots.release()
        forwarded = await receive(lanes.forward, 5)

    assert scene.store.step_commits == [(SECOND, [work.lease.run_id for work in works])]
    assert {work.lease for work in forwarded} == {work.lease for work in works}
    assert slots.value == 1  # given back once committed


async def test_the_runs_of_a_slow_step_linger_for_company_until_the_batch_is_full(scene: Scene) -> None:
    released = [anyio.Event() for _ in range(3)]

    async def waiting(ctx: StepContext) -> StepResult:
        await released[ctx.brief["n"]].wait()
        return StepResult(output=1)

    # The actor's clock stands still: a linger never passes, and only a full batch ends it.
    actor = scene.actor(spec_of(SECOND, waiting), batch_limit=3, linger_share=1.0, clock=lambda: 1000.0)
    works = await scene.runs_at(SECOND, [{"n": n} for n in range(3)])
    async with scene.running(actor, pending=works) as lanes:
        for event in released:
            event.set()
            await anyio.wait_all_tasks_blocked()  # that run finished; a committer that did not linger commits it
        await receive(lanes.forward, 3)

    assert scene.store.step_commits == [(SECOND, [work.lease.run_id for work in works])]


async def test_a_step_that_never_waits_does_not_linger(scene: Scene) -> None:
    step, _ = counting(1)
    actor = scene.actor(spec_of(SECOND, step, instant=True), linger_share=1e6, linger_cap_seconds=60.0)
    works = await scene.runs_at(SECOND, [{"n": 1}])
    async with scene.running(actor) as lanes:
        await lanes.inbox.send(works[0])
        await receive(lanes.forward, 1)  # before the test's deadline: at once

    assert scene.store.step_commits == [(SECOND, [works[0].lease.run_id])]


async def test_no_more_calls_are_in_flight_than_the_step_concurrency(scene: Scene) -> None:
    in_flight = 0
    most = 0
    go_on = anyio.Event()
    two_in_flight = anyio.Event()

    async def slow(ctx: StepContext) -> StepResult:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            two_in_flight.set()
        await go_on.wait()
        in_flight -= 1
        return StepResult(output=1)

    actor = scene.actor(spec_of(SECOND, slow, concurrency=2))
    works = await scene.runs_at(SECOND, [{"n": n} for n in range(7)])
    async with scene.running(actor, pending=works) as lanes:
        await two_in_flight.wait()
        assert in_flight == 2
        assert scene.sample("sagad_step_calls_in_flight", step=SECOND.value) == 2
        go_on.set()
        await receive(lanes.forward, 7)
    assert most == 2
    assert scene.sample("sagad_step_calls_in_flight", step=SECOND.value) == 0


async def test_an_instant_step_is_called_inline_and_any_other_in_a_worker_task(scene: Scene) -> None:
    callers: dict[bool, set[int]] = {True: set(), False: set()}
    deadlines: dict[bool, set[float]] = {True: set(), False: set()}

    def recording(instant: bool) -> Any:
        async def call(ctx: StepContext) -> StepResult:
            callers[instant].add(anyio.get_current_task().id)
            deadlines[instant].add(ctx.deadline)
            return StepResult()

        return call

    for instant in (True, False):
        actor = scene.actor(spec_of(SECOND, recording(instant), instant=instant))
        works = await scene.runs_at(SECOND, [{"n": n} for n in range(3)])
        async with scene.running(actor, pending=works) as lanes:
            await receive(lanes.forward, 3)

    assert len(callers[True]) == 1  # the actor's own task, every time
    assert 1 <= len(callers[False]) <= 3  # workers, started as needed and kept
    assert not callers[True] & callers[False]
    assert deadlines[True] == {math.inf}
    assert all(deadline < math.inf for deadline in deadlines[False])


async def test_the_first_output_becomes_the_brief_and_every_output_reaches_later_steps(scene: Scene) -> None:
    seen: list[StepContext] = []

    async def normalize(ctx: StepContext) -> StepResult:
        seen.append(ctx)
        rows = {"onboarding_brief": [{"id": str(ctx.key("brief"))}]}
        return StepResult(rows=rows, output={"client": ctx.brief["client"].upper()})

    async def strategize(ctx: StepContext) -> StepResult:
        seen.append(ctx)
        return StepResult(rows={"strategy_document": [{"n": 1}, {"n": 2}]}, output=["plan", ctx.brief["client"]])

    normalizer = scene.actor(spec_of(FIRST, normalize, instant=True))
    strategist = scene.actor(spec_of(SECOND, strategize))
    [work] = await scene.runs_at(FIRST, [{"client": "acme"}])
    async with scene.running(normalizer, pending=[work]) as first, scene.running(strategist) as second:
        await second.inbox.send(await first.forward.receive())
        [handed_on] = await receive(second.forward, 1)

    normalized = {"client": "ACME"}
    assert seen[0].brief == {"client": "acme"}  # decoded from the stored text
    assert seen[0].outputs == {}
    assert seen[1].brief == normalized
    assert seen[1].outputs == {FIRST: normalized}
    assert handed_on.brief == normalized
    assert handed_on.outputs == {FIRST: normalized, SECOND: ["plan", "ACME"]}
    stored = scene.store.runs[work.lease.run_id]
    assert stored.outputs == {FIRST: normalized, SECOND: ["plan", "ACME"]}
    assert {table: len(rows) for table, rows in stored.rows.items()} == {"onboarding_brief": 1, "strategy_document": 2}
    assert stored.next_step is Step.GENERATE_DRAFT


async def test_the_last_step_completes_the_run(scene: Scene) -> None:
    actor = scene.actor(spec_of(LAST, echo))
    works = await scene.runs_at(LAST, [{"n": 1}, {"n": 2}])
    async with scene.running(actor, pending=works):
        await scene.store.until(lambda: len(scene.store.by_status(RunStatus.COMPLETED)) == 2)
    assert len(scene.ledger) == 0
    assert scene.sample("sagad_runs_total", outcome="completed") == 2


async def test_a_step_failure_goes_to_the_relay_with_its_reason_and_is_not_retried(scene: Scene) -> None:
    attempts = 0

    async def refuse(ctx: StepContext) -> StepResult:
        nonlocal attempts
        attempts += 1
        raise StepFailed(f"client {ctx.brief['client']} is unknown")

    actor = scene.actor(spec_of(SECOND, refuse))
    [work] = await scene.runs_at(SECOND, [{"client": "acme"}])
    async with scene.running(actor, pending=[work]) as lanes:
        [failure] = await receive(lanes.failures, 1)

    assert attempts == 1
    assert failure.lease == work.lease
    assert failure.failed_step is SECOND
    assert failure.reason == "generate_strategy: client acme is unknown"
    assert failure.brief == {"client": "acme"}
    assert failure.outputs == work.outputs
    assert not failure.undo_failed_step  # the call said it did nothing
    stored = scene.store.runs[work.lease.run_id]
    assert (stored.status, stored.failed_step, stored.last_error) == (RunStatus.COMPENSATING, SECOND, failure.reason)
    assert scene.ledger.holds(work.lease)  # still ours: the compensation is to come
    assert scene.sample("sagad_step_retries_total", step=SECOND.value, reason="transient") == 0


async def test_a_run_taken_over_starts_its_attempts_again_and_its_reason_names_the_claim(scene: Scene) -> None:
    attempts: list[int] = []

    async def busy(ctx: StepContext) -> StepResult:
        attempts.append(ctx.attempt)
        raise TransientStepError("the service answered 503")

    actor = scene.actor(spec_of(SECOND, busy, retry=RetryPolicy(2, 0.001, 0.001, 0.0)))
    run_id = scene.store.submit({}, status=RunStatus.RUNNING, at=SECOND, outputs=outputs_before(SECOND, {}))
    scene.store.take_over(run_id)  # a first daemon held it, then lost it
    scene.store.runs[run_id].claimable = True
    [work] = [work_of(run) for run in await hold(scene.store, scene.ledger)]
    async with scene.running(actor, pending=[work]) as lanes:
        [failure] = await receive(lanes.failures, 1)

    assert attempts == [1, 2]
    assert failure.reason == "generate_strategy: gave up after 2 attempts (claim 2): the service answered 503"


async def test_a_transient_error_is_retried_per_the_policy_then_fails_the_run(scene: Scene) -> None:
    attempts: list[int] = []

    async def busy(ctx: StepContext) -> StepResult:
        attempts.append(ctx.attempt)
        raise TransientStepError("the service answered 503")

    actor = scene.actor(spec_of(SECOND, busy, retry=RetryPolicy(4, 0.001, 0.001, 0.0)))
    [work] = await scene.runs_at(SECOND, [{}])
    async with scene.running(actor, pending=[work]) as lanes:
        [failure] = await receive(lanes.failures, 1)

    assert attempts == [1, 2, 3, 4]
    assert failure.reason == "generate_strategy: gave up after 4 attempts (claim 1): the service answered 503"
    assert failure.undo_failed_step  # an attempt may have had an effect
    assert scene.sample("sagad_step_retries_total", step=SECOND.value, reason="transient") == 3


async def test_a_step_that_succeeds_on_a_later_attempt_is_handed_on_and_saw_its_attempt_count(scene: Scene) -> None:
    attempts: list[int] = []

    async def flaky(ctx: StepContext) -> StepResult:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise TransientStepError("try again")
        return StepResult(output=ctx.attempt)

    actor = scene.actor(spec_of(SECOND, flaky))
    [work] = await scene.runs_at(SECOND, [{}])
    async with scene.running(actor, pending=[work]) as lanes:
        [handed_on] = await receive(lanes.forward, 1)
    assert attempts == [1, 2, 3]
    assert handed_on.outputs[SECOND] == 3


async def test_a_step_past_its_timeout_is_retried_then_fails_the_run(scene: Scene) -> None:
    attempts = 0

    async def hangs(ctx: StepContext) -> StepResult:
        nonlocal attempts
        attempts += 1
        await anyio.sleep(10)
        return StepResult()

    actor = scene.actor(spec_of(SECOND, hangs, timeout_seconds=0.005, retry=RetryPolicy(2, 0.001, 0.001, 0.0)))
    [work] = await scene.runs_at(SECOND, [{}])
    async with scene.running(actor, pending=[work]) as lanes:
        [failure] = await receive(lanes.failures, 1)
    assert attempts == 2
    assert failure.reason == "generate_strategy: gave up after 2 attempts (claim 1): timed out after 0.005 s"
    assert failure.undo_failed_step
    assert scene.sample("sagad_step_retries_total", step=SECOND.value, reason="timeout") == 1


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (StepResult(rows={"qc_results": [{"n": 1}]}), "returned rows for ['qc_results'], which it does not own"),
        (StepResult(output={"when": object()}), "returned an output that is not JSON"),
        ({"not": "a StepResult"}, "returned dict, not a StepResult"),
    ],
    ids=["foreign-table", "not-json", "not-a-result"],
)
async def test_a_step_result_the_step_may_not_give_fails_the_run(scene: Scene, result: Any, reason: str) -> None:
    async def wrong(ctx: StepContext) -> Any:
        return result

    actor = scene.actor(spec_of(SECOND, wrong, instant=True))
    [work] = await scene.runs_at(SECOND, [{}])
    async with scene.running(actor, pending=[work]) as lanes:
        [failure] = await receive(lanes.failures, 1)
    assert failure.reason.startswith(
        "generate_strategy: gave up after 3 attempts (claim 1): TypeError: step generate_strategy"
    )
    assert reason in failure.reason
    assert scene.store.runs[work.lease.run_id].rows == {}


async def test_a_run_whose_fence_fails_is_dropped_and_counted_fenced_and_lost(scene: Scene) -> None:
    actor = scene.actor(spec_of(SECOND, echo, instant=True))
    taken, kept = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}])
    scene.store.take_over(taken.lease.run_id)
    async with scene.running(actor, pending=[taken, kept]) as lanes:
        [handed_on] = await receive(lanes.forward, 1)  # handed on after the fenced run, which came first

    assert handed_on.lease == kept.lease
    assert not scene.ledger.holds(taken.lease)
    assert scene.sample("sagad_fenced_writes_total", stage="step") == 1
    assert scene.sample("sagad_leases_lost_total", found_by="step") == 1
    assert lanes.failures.statistics().current_buffer_used == 0


async def test_a_run_the_store_skipped_is_committed_again_and_not_lost(scene: Scene) -> None:
    actor = scene.actor(spec_of(SECOND, echo, instant=True))
    locked, free = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}])
    scene.store.lock(locked.lease.run_id)
    async with scene.running(actor, pending=[locked, free]) as lanes:
        forwarded = await receive(lanes.forward, 2)

    assert [work.lease for work in forwarded] == [free.lease, locked.lease]
    assert scene.store.step_commits == [
        (SECOND, [locked.lease.run_id, free.lease.run_id]),
        (SECOND, [locked.lease.run_id]),
    ]
    assert scene.sample("sagad_step_retries_total", step=SECOND.value, reason="locked") == 1
    assert scene.sample("sagad_leases_lost_total", found_by="step") == 0


async def test_a_permanent_store_error_splits_the_batch_and_fails_only_the_offending_run(scene: Scene) -> None:
    actor = scene.actor(spec_of(SECOND, echo, instant=True))
    before, bad, after = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}, {"n": 3}])
    scene.store.fail("commit_step", PermanentDatabaseError, runs=[bad.lease.run_id], times=None)
    async with scene.running(actor, pending=[before, bad, after]) as lanes:
        forwarded = await receive(lanes.forward, 2)
        [failure] = await receive(lanes.failures, 1)

    assert [work.lease for work in forwarded] == [before.lease, after.lease]
    assert failure.lease == bad.lease
    assert failure.reason == "generate_strategy: commit_step failed on purpose"
    assert failure.undo_failed_step  # the call succeeded: it may have had effects
    assert scene.store.runs[bad.lease.run_id].status is RunStatus.COMPENSATING
    assert scene.sample("sagad_db_errors_total", kind="permanent") == 2  # the batch, then the run alone


async def test_a_transient_store_error_retries_the_whole_batch(scene: Scene) -> None:
    actor = scene.actor(spec_of(SECOND, echo, instant=True))
    works = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}])
    scene.store.fail("commit_step", TransientDatabaseError, times=1)
    async with scene.running(actor, pending=works) as lanes:
        forwarded = await receive(lanes.forward, 2)

    assert [work.lease for work in forwarded] == [work.lease for work in works]
    assert [runs for _, runs in scene.store.step_commits] == [[w.lease.run_id for w in works]] * 2
    assert scene.sample("sagad_db_errors_total", kind="transient") == 1
    assert scene.sample("sagad_step_retries_total", step=SECOND.value, reason="database") == 1


@pytest.mark.parametrize("leave", ["lose", "drop"])
async def test_a_call_whose_lease_is_lost_mid_call_is_cancelled_and_nothing_is_committed(
    scene: Scene, leave: str
) -> None:
    started = anyio.Event()
    cancelled: list[int] = []

    async def waits(ctx: StepContext) -> StepResult:
        if ctx.brief["n"] == 1:
            started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(ctx.brief["n"])
                raise
        return StepResult(output=ctx.brief["n"])

    actor = scene.actor(spec_of(SECOND, waits, concurrency=1))
    lost, next_one = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}])
    async with scene.running(actor, pending=[lost]) as lanes:
        await started.wait()
        if leave == "lose":
            scene.ledger.lose([lost.lease], "renewal")
        else:
            scene.ledger.drop([lost.lease])
        await lanes.inbox.send(next_one)  # the lost call's slot is free again
        [handed_on] = await receive(lanes.forward, 1)

    assert cancelled == [1]
    assert handed_on.lease == next_one.lease
    assert scene.store.step_commits == [(SECOND, [next_one.lease.run_id])]
    assert lanes.failures.statistics().current_buffer_used == 0
    assert scene.sample("sagad_fenced_writes_total", stage="call") == 1


async def test_a_brief_that_cannot_be_read_fails_its_own_run_alone(scene: Scene) -> None:
    actor = scene.actor(spec_of(FIRST, echo, instant=True))
    bad, good = await scene.runs_at(FIRST, [{}, {"fine": True}])
    unreadable = StepWork(bad.lease, "{not json", bad.outputs)
    async with scene.running(actor, pending=[unreadable, good]) as lanes:
        [handed_on] = await receive(lanes.forward, 1)
        [failure] = await receive(lanes.failures, 1)
    assert handed_on.brief == {"fine": True}
    assert failure.lease == bad.lease
    assert failure.reason.startswith("normalize_brief: invalid brief: it cannot be read")
    assert not failure.undo_failed_step
