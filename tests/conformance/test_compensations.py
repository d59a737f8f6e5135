"""Compensations and CompensationDeferrals, as the compensator and the relays rely on them: fake and SQL alike."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sagad.domain.rows import StepWrite, Undone
from sagad.domain.runs import LeaseToken, RunStatus
from sagad.domain.steps import Step
from tests.conformance.harness import Harness
from tests.conformance.scenes import LEASE_SECONDS, advance, claimed, fail_at, tables_through
from tests.unit.fakes import ME, PEER

pytestmark = pytest.mark.anyio


async def test_a_compensation_deletes_exactly_the_runs_rows_and_reports_the_rows_per_table(h: Harness) -> None:
    doomed, bystander, failed_elsewhere = await claimed(h, 3)
    await fail_at(h, doomed, Step.QC_EVALUATE)
    await advance(h, bystander, Step.QC_EVALUATE)
    await fail_at(h, failed_elsewhere, Step.GENERATE_DRAFT)
    before = await h.view(doomed.run_id)
    others = {held.run_id: await h.view(held.run_id) for held in (bystander, failed_elsewhere)}
    tables = tables_through(Step.QC_EVALUATE)

    committed = await h.writer.compensate([doomed.lease], tables)

    assert set(committed.owned) == {doomed.run_id}
    assert committed.owned[doomed.run_id] >= 0.0
    assert committed.skipped == frozenset()
    # Every table it was given, the ones the run wrote nothing to as well, and its kept outputs.
    assert committed.rows == {**dict.fromkeys(tables, 0), **before.rows, "step_outputs": 3}
    view = await h.view(doomed.run_id)
    assert (view.status, view.claimed_by, view.rows, view.outputs) == (RunStatus.COMPENSATED, None, {}, {})
    assert (view.failed_step, view.last_error) == (Step.QC_EVALUATE, before.last_error)
    assert {run_id: await h.view(run_id) for run_id in others} == others


async def test_a_compensation_of_many_runs_is_one_commit_reporting_their_rows_together(h: Harness) -> None:
    first, second = await claimed(h, 2)
    await fail_at(h, first, Step.GENERATE_STRATEGY)
    await fail_at(h, second, Step.GENERATE_DRAFT)
    rows = [(await h.view(held.run_id)).rows for held in (first, second)]
    tables = tables_through(Step.GENERATE_DRAFT)

    committed = await h.writer.compensate([first.lease, second.lease], tables)

    assert set(committed.owned) == {first.run_id, second.run_id}
    total = {table: rows[0].get(table, 0) + rows[1].get(table, 0) for table in tables}
    assert committed.rows == {**total, "step_outputs": 1 + 2}


async def test_a_compensation_is_fenced_by_worker_token_and_status(h: Harness) -> None:
    stale, peers, running = await claimed(h, 3)
    for held in (stale, peers):
        await fail_at(h, held, Step.GENERATE_STRATEGY)
    await advance(h, running, Step.GENERATE_STRATEGY)
    await h.expire([stale.run_id])
    [mine_again] = await h.leases.claim(ME, 1, LEASE_SECONDS)
    await h.expire([peers.run_id])
    [taken] = await h.leases.claim(PEER, 1, LEASE_SECONDS)
    assert (mine_again.lease.run_id, taken.lease.run_id) == (stale.run_id, peers.run_id)
    runs = (stale, peers, running)
    before = [await h.view(held.run_id) for held in runs]

    committed = await h.writer.compensate([held.lease for held in runs], tables_through(Step.GENERATE_STRATEGY))

    assert (committed.owned, committed.skipped) == ({}, frozenset())
    assert set(committed.rows.values()) <= {0}
    assert [await h.view(held.run_id) for held in runs] == before


async def test_a_compensation_skips_a_run_whose_row_another_transaction_holds(h: Harness) -> None:
    locked, free = await claimed(h, 2)
    for held in (locked, free):
        await fail_at(h, held, Step.GENERATE_STRATEGY)
    locked_rows = (await h.view(locked.run_id)).rows
    free_rows = (await h.view(free.run_id)).rows
    tables = tables_through(Step.GENERATE_STRATEGY)

    async with h.held_elsewhere([locked.run_id]):
        committed = await h.writer.compensate([locked.lease, free.lease], tables)
        assert (await h.view(locked.run_id)).rows == locked_rows

    assert set(committed.owned) == {free.run_id}
    assert committed.skipped == {locked.run_id}
    assert committed.rows == {**dict.fromkeys(tables, 0), **free_rows, "step_outputs": 1}
    again = await h.writer.compensate([locked.lease], tables)
    assert (set(again.owned), again.skipped) == ({locked.run_id}, frozenset())


async def test_a_compensation_found_already_made_under_the_same_lease_is_owned_and_deletes_nothing(
    h: Harness,
) -> None:
    [held] = await claimed(h, 1)
    await fail_at(h, held, Step.GENERATE_DRAFT)
    tables = tables_through(Step.GENERATE_DRAFT)
    await h.writer.compensate([held.lease], tables)

    again = await h.writer.compensate([held.lease], tables)

    assert set(again.owned) == {held.run_id}
    assert again.rows == {**dict.fromkeys(tables, 0), "step_outputs": 0}


async def test_a_finished_compensation_clears_the_reason_it_was_held_up(h: Harness) -> None:
    [held] = await claimed(h, 1)
    await fail_at(h, held, Step.GENERATE_STRATEGY)
    await h.writer.defer_compensations([(held.lease, "ads service down")], 60.0)
    await h.expire([held.run_id])
    [again] = await h.leases.claim(ME, 1, LEASE_SECONDS)

    committed = await h.writer.compensate([again.lease], tables_through(Step.GENERATE_STRATEGY))

    assert set(committed.owned) == {held.run_id}
    assert (await h.view(held.run_id)).compensation_error is None


async def test_a_deferral_is_fenced_and_gives_the_run_up_with_its_rows(h: Harness) -> None:
    deferred, stale, running = await claimed(h, 3)
    for held in (deferred, stale):
        await fail_at(h, held, Step.GENERATE_DRAFT)
    await h.expire([stale.run_id])
    await h.leases.claim(PEER, 1, LEASE_SECONDS)
    rows = (await h.view(deferred.run_id)).rows
    errors = [(held.lease, f"undo of {held.run_id} failed") for held in (deferred, stale, running)]

    assert await h.writer.defer_compensations(errors, 60.0) == {deferred.run_id}

    view = await h.view(deferred.run_id)
    assert (view.status, view.claimed_by, view.rows) == (RunStatus.COMPENSATING, None, rows)
    assert (await h.view(stale.run_id)).compensation_error is None
    assert (await h.view(running.run_id)).compensation_error is None
    # Given up: the deferring daemon can neither compensate nor renew it any more.
    tables = tables_through(Step.GENERATE_DRAFT)
    assert (await h.writer.compensate([deferred.lease], tables)).owned == {}
    assert (await h.leases.renew(ME, [deferred.lease], LEASE_SECONDS)).renewed == set()
    assert await h.leases.taken_over(ME, [deferred.lease]) == {deferred.run_id}


async def test_a_runs_history_keeps_each_steps_call_before_and_after_its_compensation_and_its_undos(
    h: Harness,
) -> None:
    [held] = await claimed(h, 1)
    await advance(h, held, Step.GENERATE_STRATEGY)
    retried = replace(await held.write(Step.GENERATE_STRATEGY), attempts=3, call_seconds=0.25, retry_reasons="a; b")
    await h.writer.commit_step(Step.GENERATE_STRATEGY, [retried])
    await h.writer.commit_step(Step.GENERATE_DRAFT, [StepWrite(held.lease, failure="refused", attempts=2)])
    token = held.lease.token
    calls = {Step.NORMALIZE_BRIEF: (1, None, token), Step.GENERATE_STRATEGY: (3, "a; b", token)}
    assert (await h.view(held.run_id)).calls == calls
    undone = [
        (held.run_id, Undone(Step.GENERATE_STRATEGY, ran=True, attempts=2, seconds=0.1, retry_reasons="busy")),
        (held.run_id, Undone(Step.NORMALIZE_BRIEF, ran=False)),
    ]

    await h.writer.compensate([held.lease], tables_through(Step.GENERATE_DRAFT), undone)

    view = await h.view(held.run_id)
    assert (view.status, view.outputs, view.calls) == (RunStatus.COMPENSATED, {}, calls)
    assert view.undone == [(Step.GENERATE_STRATEGY, "undone"), (Step.NORMALIZE_BRIEF, "no undo")]


async def test_the_undos_of_a_run_not_compensated_are_not_kept(h: Harness) -> None:
    [held, other] = await claimed(h, 2)
    await fail_at(h, held, Step.GENERATE_STRATEGY)
    await fail_at(h, other, Step.GENERATE_STRATEGY)
    tables = tables_through(Step.GENERATE_STRATEGY)
    # The first is compensated: its undos are kept; the second's lease is stale, and nothing of it is.
    stale = replace(other.lease, token=LeaseToken(other.lease.token + 7))
    undone = [(run_id, Undone(Step.NORMALIZE_BRIEF, ran=False)) for run_id in (held.run_id, other.run_id)]

    committed = await h.writer.compensate([held.lease, stale], tables, undone)

    assert set(committed.owned) == {held.run_id}
    assert (await h.view(held.run_id)).undone == [(Step.NORMALIZE_BRIEF, "no undo")]
    assert (await h.view(other.run_id)).undone == []
