"""RunLeases, as the claimer, the renewer, the sampler and a stopping daemon rely on it: fake and SQL alike."""

from __future__ import annotations

import json
import uuid

import pytest

from sagad.domain.runs import Lease, RunId, RunStatus, StatusSample, WorkerId
from sagad.domain.steps import Step
from tests.conformance.harness import Harness
from tests.conformance.scenes import LEASE_SECONDS, advance, claimed, complete, fail_at, submit, tables_through
from tests.unit.fakes import ME, PEER

pytestmark = pytest.mark.anyio


async def test_a_claim_takes_pending_runs_under_a_new_token_and_starts_them(h: Harness) -> None:
    [(run_id, brief)] = await submit(h, 1)
    before = await h.view(run_id)

    [run] = await h.leases.claim(ME, 10, LEASE_SECONDS)

    assert run.lease.run_id == run_id
    assert run.lease.token > before.token
    assert (run.status, run.next_step, run.failed_step, run.last_error) == (
        RunStatus.RUNNING,
        Step.NORMALIZE_BRIEF,
        None,
        None,
    )
    assert (run.attempts, dict(run.outputs), json.loads(run.brief)) == (1, {}, brief)
    after = await h.view(run_id)
    assert (after.status, after.claimed_by, after.token, after.attempts) == (RunStatus.RUNNING, ME, run.lease.token, 1)


async def test_a_claim_takes_no_more_than_its_limit_the_longest_available_first(h: Harness) -> None:
    submitted = [run_id for run_id, _ in await submit(h, 3)]
    first = await h.leases.claim(ME, 2, LEASE_SECONDS)
    [given_back, kept] = first
    await h.leases.release(ME, [given_back.lease])

    assert [run.lease.run_id for run in first] == submitted[:2]
    # The third waited since its submission; the one given back became available after it.
    assert [run.lease.run_id for run in await h.leases.claim(PEER, 1, LEASE_SECONDS)] == submitted[2:]
    assert [run.lease.run_id for run in await h.leases.claim(PEER, 5, LEASE_SECONDS)] == [given_back.lease.run_id]
    assert kept.lease.run_id == submitted[1]


async def test_a_live_lease_is_claimed_by_nobody_else_nor_twice(h: Harness) -> None:
    [held] = await claimed(h, 1)
    assert await h.leases.claim(PEER, 10, LEASE_SECONDS) == []
    assert await h.leases.claim(ME, 10, LEASE_SECONDS) == []
    assert (await h.view(held.run_id)).claimed_by == ME


async def test_an_expired_lease_is_claimed_again_under_a_higher_token(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await h.expire([held.run_id])

    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)

    assert again.lease.run_id == held.run_id
    assert again.lease.token == held.lease.token + 1
    assert again.attempts == 2
    assert again.status is RunStatus.RUNNING
    assert (await h.view(held.run_id)).claimed_by == PEER
    assert await h.leases.claim(ME, 10, LEASE_SECONDS) == []


async def test_a_run_whose_row_another_transaction_holds_is_passed_over_by_a_claim(h: Harness) -> None:
    (locked, _), (free, _) = await submit(h, 2)
    async with h.held_elsewhere([locked]):
        assert [run.lease.run_id for run in await h.leases.claim(ME, 10, LEASE_SECONDS)] == [free]
    assert [run.lease.run_id for run in await h.leases.claim(ME, 10, LEASE_SECONDS)] == [locked]


async def test_finished_runs_are_never_claimed(h: Harness) -> None:
    completed, compensated = await claimed(h, 2)
    await complete(h, completed)
    await fail_at(h, compensated, Step.GENERATE_STRATEGY)
    await h.writer.compensate([compensated.lease], tables_through(Step.GENERATE_STRATEGY))
    await h.expire([completed.run_id, compensated.run_id])
    assert await h.leases.claim(PEER, 10, LEASE_SECONDS) == []


async def test_a_run_taken_over_comes_back_at_its_next_step_with_exactly_the_outputs_committed(h: Harness) -> None:
    [held] = await claimed(h, 1)
    outputs = await advance(h, held, Step.GENERATE_DRAFT)
    await h.expire([held.run_id])

    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)

    assert (again.status, again.next_step) == (RunStatus.RUNNING, Step.GENERATE_DRAFT)
    assert dict(again.outputs) == outputs
    assert set(outputs) == {Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY}
    # As the committed text decodes, keys in the order the step wrote them.
    assert [json.dumps(again.outputs[step]) for step in outputs] == [json.dumps(out) for out in outputs.values()]
    assert json.loads(again.brief) == held.brief


async def test_a_compensating_run_taken_over_comes_back_compensating_at_its_failed_step(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await fail_at(h, held, Step.QC_EVALUATE, reason="qc_evaluate: scored 0.2")
    await h.expire([held.run_id])

    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)

    assert (again.status, again.failed_step, again.next_step, again.last_error) == (
        RunStatus.COMPENSATING,
        Step.QC_EVALUATE,
        Step.QC_EVALUATE,
        "qc_evaluate: scored 0.2",
    )
    assert set(again.outputs) == {Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY, Step.GENERATE_DRAFT}


async def test_a_deferred_compensation_is_claimed_only_once_its_wait_is_over(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await fail_at(h, held, Step.GENERATE_STRATEGY)

    assert await h.writer.defer_compensations([(held.lease, "ads service down")], 60.0) == {held.run_id}

    view = await h.view(held.run_id)
    assert (view.status, view.claimed_by, view.compensation_error) == (RunStatus.COMPENSATING, None, "ads service down")
    assert await h.leases.claim(PEER, 10, LEASE_SECONDS) == []
    await h.expire([held.run_id])
    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)
    assert (again.lease.token, again.status, again.failed_step) == (
        held.lease.token + 1,
        RunStatus.COMPENSATING,
        Step.GENERATE_STRATEGY,
    )


async def test_unanswered_claims_are_the_live_leases_of_the_worker_it_does_not_know(h: Harness) -> None:
    known, unknown, expired = await claimed(h, 3)
    [peers] = await claimed(h, 1, worker=PEER)
    await h.expire([expired.run_id])

    [found] = await h.leases.unanswered_claims(ME, [known.run_id])

    assert found == unknown.run
    assert peers.run_id != found.lease.run_id
    assert await h.leases.unanswered_claims(ME, [known.run_id, unknown.run_id]) == []


async def test_a_renewal_extends_only_the_leases_still_held_by_worker_and_token(h: Harness) -> None:
    kept, taken, reclaimed = await claimed(h, 3)
    await h.expire([taken.run_id, reclaimed.run_id])
    [peers] = await h.leases.claim(PEER, 1, LEASE_SECONDS)
    [mine_again] = await h.leases.claim(ME, 1, LEASE_SECONDS)
    assert (peers.lease.run_id, mine_again.lease.run_id) == (taken.run_id, reclaimed.run_id)
    leases = [kept.lease, taken.lease, reclaimed.lease]

    assert (await h.leases.renew(ME, leases, LEASE_SECONDS)).renewed == {kept.run_id}
    assert (await h.leases.renew(PEER, [kept.lease], LEASE_SECONDS)).renewed == set()
    assert await h.leases.taken_over(ME, leases) == {taken.run_id, reclaimed.run_id}
    assert await h.leases.taken_over(ME, [kept.lease, mine_again.lease]) == set()


async def test_a_renewal_makes_an_expired_lease_live_again(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await h.expire([held.run_id])
    assert (await h.leases.renew(ME, [held.lease], LEASE_SECONDS)).renewed == {held.run_id}
    assert await h.leases.claim(PEER, 10, LEASE_SECONDS) == []
    assert await h.leases.count_overdue() == 0


async def test_a_renewal_passes_over_a_run_whose_row_another_transaction_holds_without_calling_it_lost(
    h: Harness,
) -> None:
    locked, free = await claimed(h, 2)
    async with h.held_elsewhere([locked.run_id]):
        assert (await h.leases.renew(ME, [locked.lease, free.lease], LEASE_SECONDS)).renewed == {free.run_id}
        assert await h.leases.taken_over(ME, [locked.lease]) == set()


async def test_finished_runs_are_neither_renewed_nor_taken_over(h: Harness) -> None:
    completed, compensated = await claimed(h, 2)
    await complete(h, completed)
    await fail_at(h, compensated, Step.NORMALIZE_BRIEF)
    await h.writer.compensate([compensated.lease], tables_through(Step.NORMALIZE_BRIEF))
    leases = [completed.lease, compensated.lease]
    assert (await h.leases.renew(ME, leases, LEASE_SECONDS)).renewed == set()
    assert await h.leases.taken_over(ME, leases) == set()
    assert await h.leases.release(ME, leases) == set()


async def test_a_release_gives_back_only_the_leases_still_held_and_anyone_may_claim_them_at_once(h: Harness) -> None:
    given_back, taken = await claimed(h, 2)
    await h.expire([taken.run_id])
    await h.leases.claim(PEER, 1, LEASE_SECONDS)

    assert await h.leases.release(ME, [given_back.lease, taken.lease]) == {given_back.run_id}

    assert (await h.view(given_back.run_id)).claimed_by is None
    assert (await h.view(taken.run_id)).claimed_by == PEER
    assert await h.leases.taken_over(ME, [given_back.lease]) == {given_back.run_id}
    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)
    assert (again.lease.run_id, again.lease.token) == (given_back.run_id, given_back.lease.token + 1)


async def test_a_release_passes_over_a_run_whose_row_another_transaction_holds(h: Harness) -> None:
    locked, free = await claimed(h, 2)
    async with h.held_elsewhere([locked.run_id]):
        assert await h.leases.release(ME, [locked.lease, free.lease]) == {free.run_id}
    assert (await h.view(locked.run_id)).claimed_by == ME


async def test_the_status_sample_counts_every_run_by_status(h: Harness) -> None:
    assert await h.leases.sample_statuses() == StatusSample(in_flight={}, finished={}, total=0)
    running, compensating, completed, compensated = await claimed(h, 4)
    await submit(h, 2)
    await fail_at(h, compensating, Step.GENERATE_DRAFT)
    await complete(h, completed)
    await fail_at(h, compensated, Step.NORMALIZE_BRIEF)
    await h.writer.compensate([compensated.lease], tables_through(Step.NORMALIZE_BRIEF))
    assert running.run.status is RunStatus.RUNNING

    sample = await h.leases.sample_statuses()

    assert sample.in_flight == {RunStatus.PENDING: 2, RunStatus.RUNNING: 1, RunStatus.COMPENSATING: 1}
    assert sample.finished == {RunStatus.COMPLETED: 1, RunStatus.COMPENSATED: 1}
    assert sample.total == 6


async def test_overdue_runs_are_the_held_ones_whose_lease_ran_out(h: Harness) -> None:
    overdue, live = await claimed(h, 2)
    await submit(h, 1)  # pending: no lease to run out
    assert await h.leases.count_overdue() == 0
    await h.expire([overdue.run_id])
    assert await h.leases.count_overdue() == 1
    assert await h.leases.count_overdue(grace_seconds=LEASE_SECONDS) == 0  # it ran out just now
    assert live.run_id != overdue.run_id


async def test_another_worker_name_is_another_holder(h: Harness) -> None:
    [held] = await claimed(h, 1)
    stranger = WorkerId(f"{ME}-2")
    assert (await h.leases.renew(stranger, [held.lease], LEASE_SECONDS)).renewed == set()
    assert await h.leases.release(stranger, [held.lease]) == set()
    assert await h.leases.taken_over(stranger, [held.lease]) == {held.run_id}
    assert await h.leases.unanswered_claims(stranger, []) == []


async def test_a_compensating_run_is_renewed_given_back_and_found_unanswered_as_a_running_one_is(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await fail_at(h, held, Step.GENERATE_DRAFT, reason="draft refused")

    assert (await h.leases.renew(ME, [held.lease], LEASE_SECONDS)).renewed == {held.run_id}
    [unanswered] = await h.leases.unanswered_claims(ME, [])
    assert (unanswered.status, unanswered.failed_step, unanswered.last_error) == (
        RunStatus.COMPENSATING,
        Step.GENERATE_DRAFT,
        "draft refused",
    )
    assert await h.leases.release(ME, [held.lease]) == {held.run_id}
    assert await h.leases.unanswered_claims(ME, []) == []
    [again] = await h.leases.claim(PEER, 10, LEASE_SECONDS)
    assert (again.status, again.attempts, again.lease.token) == (RunStatus.COMPENSATING, 2, held.lease.token + 1)


async def test_leases_of_runs_the_store_never_had_are_neither_renewed_given_back_nor_taken_over(h: Harness) -> None:
    [held] = await claimed(h, 1)
    unknown = Lease(RunId(uuid.UUID(int=2**100)), held.lease.token)
    assert (await h.leases.renew(ME, [unknown], LEASE_SECONDS)).renewed == set()
    assert await h.leases.release(ME, [unknown]) == set()
    assert await h.leases.taken_over(ME, [unknown, held.lease]) == set()
