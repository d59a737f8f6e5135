"""StepWriter, as the step actors and the claimer's poison check rely on it: fake and SQL alike."""

from __future__ import annotations

import pytest

from sagad.domain.rows import StepWrite
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from tests.conformance.harness import Harness, output_of
from tests.conformance.scenes import LEASE_SECONDS, advance, claimed, complete, fail_at
from tests.unit.fakes import ME, PEER

pytestmark = pytest.mark.anyio


def counts(write: StepWrite) -> dict[str, int]:
    return {table: len(rows) for table, rows in write.rows.items() if rows}


async def test_a_step_commit_writes_the_rows_and_output_and_moves_the_run_to_its_next_step(h: Harness) -> None:
    [held] = await claimed(h, 1)
    write = await held.write(Step.NORMALIZE_BRIEF)

    committed = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [write])

    assert set(committed.owned) == {held.run_id}
    assert committed.owned[held.run_id] >= 0.0
    assert committed.skipped == frozenset()
    assert committed.rows == {}  # a step commit reports no row counts (Committed.rows is the compensation's)
    view = await h.view(held.run_id)
    assert (view.status, view.next_step, view.claimed_by) == (RunStatus.RUNNING, 1, ME)
    assert view.rows == counts(write)
    assert view.outputs == {Step.NORMALIZE_BRIEF: output_of(write.output)}


async def test_the_last_step_completes_the_run_and_lets_go_of_it(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await complete(h, held)
    view = await h.view(held.run_id)
    assert (view.status, view.next_step, view.claimed_by) == (RunStatus.COMPLETED, len(Step), None)
    assert set(view.outputs) == set(Step)


async def test_a_failure_marks_the_run_compensating_at_its_step_and_writes_nothing(h: Harness) -> None:
    [held] = await claimed(h, 1)
    outputs = await advance(h, held, Step.GENERATE_STRATEGY)
    before = await h.view(held.run_id)

    committed = await h.writer.commit_step(Step.GENERATE_STRATEGY, [StepWrite(held.lease, failure="no plan")])

    assert set(committed.owned) == {held.run_id}
    view = await h.view(held.run_id)
    assert (view.status, view.failed_step, view.last_error, view.claimed_by) == (
        RunStatus.COMPENSATING,
        Step.GENERATE_STRATEGY,
        "no plan",
        ME,
    )
    assert view.next_step == Step.GENERATE_STRATEGY.index
    assert (view.rows, view.outputs) == (before.rows, outputs)


async def test_a_stale_token_writes_nothing_and_the_run_is_reported_lost(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await h.expire([held.run_id])
    [again] = await h.leases.claim(ME, 1, LEASE_SECONDS)  # the same worker, a newer claim
    before = await h.view(held.run_id)

    stale = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [await held.write(Step.NORMALIZE_BRIEF)])

    assert (stale.owned, stale.skipped) == ({}, frozenset())
    assert await h.view(held.run_id) == before
    fresh = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [await held.write(Step.NORMALIZE_BRIEF, again.lease)])
    assert set(fresh.owned) == {held.run_id}


async def test_a_run_another_worker_holds_is_not_written_even_under_its_token(h: Harness) -> None:
    [peers] = await claimed(h, 1, worker=PEER)
    before = await h.view(peers.run_id)
    for write in (await peers.write(Step.NORMALIZE_BRIEF), StepWrite(peers.lease, failure="mine")):
        committed = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [write])
        assert (committed.owned, committed.skipped) == ({}, frozenset())
    assert await h.view(peers.run_id) == before


async def test_a_run_at_another_step_is_not_written(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await advance(h, held, Step.GENERATE_STRATEGY)
    before = await h.view(held.run_id)
    ahead = await h.writer.commit_step(Step.GENERATE_DRAFT, [await held.write(Step.GENERATE_DRAFT)])
    assert (ahead.owned, ahead.skipped) == ({}, frozenset())
    assert await h.view(held.run_id) == before


async def test_a_commit_found_already_made_under_the_same_lease_is_owned_and_writes_nothing_twice(h: Harness) -> None:
    done, failed, completed = await claimed(h, 3)
    await advance(h, done, Step.GENERATE_STRATEGY)
    await fail_at(h, failed, Step.GENERATE_STRATEGY, reason="first")
    await complete(h, completed)
    views = [await h.view(held.run_id) for held in (done, failed, completed)]

    # As a retry after a lost answer sends them again.
    again = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [await done.write(Step.NORMALIZE_BRIEF)])
    failed_again = await h.writer.commit_step(Step.GENERATE_STRATEGY, [StepWrite(failed.lease, failure="second")])
    completed_again = await h.writer.commit_step(Step.DELIVER, [await completed.write(Step.DELIVER)])

    assert set(again.owned) == {done.run_id}
    assert set(failed_again.owned) == {failed.run_id}
    assert set(completed_again.owned) == {completed.run_id}
    assert [await h.view(held.run_id) for held in (done, failed, completed)] == views


async def test_a_batch_writes_the_runs_whose_fence_holds_skips_the_locked_and_leaves_out_the_lost(h: Harness) -> None:
    ours, stale, locked = await claimed(h, 3)
    await h.expire([stale.run_id])
    await h.leases.claim(PEER, 1, LEASE_SECONDS)
    writes = [await held.write(Step.NORMALIZE_BRIEF) for held in (ours, stale, locked)]
    before = {held.run_id: await h.view(held.run_id) for held in (stale, locked)}

    async with h.held_elsewhere([locked.run_id]):
        committed = await h.writer.commit_step(Step.NORMALIZE_BRIEF, writes)
        assert set(committed.owned) == {ours.run_id}
        assert committed.skipped == {locked.run_id}
        assert {run_id: await h.view(run_id) for run_id in before} == before
    assert (await h.view(ours.run_id)).rows == counts(writes[0])

    # Once the other transaction is gone, the skipped run is written as any other.
    retried = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [writes[2]])
    assert (set(retried.owned), retried.skipped) == ({locked.run_id}, frozenset())
    assert (await h.view(locked.run_id)).rows == counts(writes[2])


async def test_a_failure_for_a_locked_run_is_skipped_too(h: Harness) -> None:
    [held] = await claimed(h, 1)
    async with h.held_elsewhere([held.run_id]):
        committed = await h.writer.commit_step(Step.NORMALIZE_BRIEF, [StepWrite(held.lease, failure="poison")])
    assert (committed.owned, committed.skipped) == ({}, frozenset({held.run_id}))
    assert (await h.view(held.run_id)).status is RunStatus.RUNNING


async def test_an_expired_lease_nobody_claimed_since_still_commits(h: Harness) -> None:
    # The fence is the worker and the token, never the clock: until another claim, the run is still ours.
    done, failed = await claimed(h, 2)
    await h.expire([done.run_id, failed.run_id])
    committed = await h.writer.commit_step(
        Step.NORMALIZE_BRIEF, [await done.write(Step.NORMALIZE_BRIEF), StepWrite(failed.lease, failure="late")]
    )
    assert set(committed.owned) == {done.run_id, failed.run_id}
    assert (await h.view(failed.run_id)).status is RunStatus.COMPENSATING
