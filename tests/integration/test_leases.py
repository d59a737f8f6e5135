"""Leases and fencing: a daemon that lost a run can write nothing for it."""

from __future__ import annotations

import json

import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import Lease, LeaseToken, WorkerId
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore
from tests.helpers import TABLES, rows_of, running_daemon, shown, step_write, wait_terminal

pytestmark = pytest.mark.anyio

FIRST, SECOND = WorkerId("first"), WorkerId("second")


async def _expire(db: Database) -> None:
    await db.fetch("UPDATE workflow_runs SET available_at = now() - interval '1 second' WHERE claimed_by IS NOT NULL")


async def test_every_claim_increments_the_fencing_token(db: Database, runs: RunStore) -> None:
    await runs.submit(sample_brief(Ending.COMPLETED, 1))
    [first] = await runs.claim(FIRST, 10, 60)
    assert await runs.claim(SECOND, 10, 60) == []  # a live lease is not claimable
    await _expire(db)
    [second] = await runs.claim(SECOND, 10, 60)
    assert second.lease.run_id == first.lease.run_id
    assert second.lease.token == first.lease.token + 1
    assert second.attempts == 2


async def test_a_daemon_whose_lease_was_taken_over_cannot_commit_a_step(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.COMPLETED, 2))
    [stale] = await runs.claim(FIRST, 1, 60)
    first_step = StepStore(db, FIRST)
    await first_step.commit_step(
        Step.NORMALIZE_BRIEF, [await step_write(stale.lease, stale.brief, Step.NORMALIZE_BRIEF)]
    )
    await _expire(db)
    [fresh] = await runs.claim(SECOND, 1, 60)
    before = await rows_of(db, run_id)

    committed = await first_step.commit_step(
        Step.GENERATE_STRATEGY, [await step_write(stale.lease, stale.brief, Step.GENERATE_STRATEGY)]
    )

    assert committed.owned == {}
    assert committed.rows == {}
    assert await rows_of(db, run_id) == before
    status = await shown(db, run_id)
    assert status is not None
    assert (status.claimed_by, status.lease_token, status.current_step) == (
        "second",
        fresh.lease.token,
        "generate_strategy",
    )
    # The stale daemon cannot renew or release it either.
    assert (await runs.renew(FIRST, [stale.lease], 60)).renewed == set()
    assert await runs.release(FIRST, [stale.lease]) == set()


async def test_a_daemon_whose_lease_was_taken_over_cannot_compensate(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.QC_FAIL, 3))
    async with running_daemon(db, worker="first"):
        await wait_terminal(db, [run_id])
    # Put the run back mid-compensation with rows present, held by a daemon that then loses it.
    await db.fetch(
        "UPDATE workflow_runs SET status = 'running', next_step = 0, failed_step = NULL, last_error = NULL,"
        " finished_at = NULL, available_at = now() WHERE id = $1",
        run_id,
    )
    [stale] = await runs.claim(FIRST, 1, 60)
    steps = StepStore(db, FIRST)
    await steps.commit_step(Step.NORMALIZE_BRIEF, [await step_write(stale.lease, stale.brief, Step.NORMALIZE_BRIEF)])
    await db.fetch(
        "UPDATE workflow_runs SET status = 'compensating', failed_step = 'generate_strategy', last_error = 'x'"
        " WHERE id = $1",
        run_id,
    )
    await _expire(db)
    [fresh] = await runs.claim(SECOND, 1, 60)
    before = await rows_of(db, run_id)
    assert before["onboarding_brief"] == 1

    committed = await steps.compensate([stale.lease], frozenset(TABLES))

    assert committed.owned == {}
    assert await rows_of(db, run_id) == before
    # The daemon that holds the lease now can.
    done = await StepStore(db, SECOND).compensate([fresh.lease], frozenset(TABLES))
    assert set(done.owned) == {run_id}
    assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)


async def test_renewal_is_one_statement_for_all_held_runs_and_reports_lost_ones(db: Database, runs: RunStore) -> None:
    for seed in range(5):
        await runs.submit(sample_brief(Ending.COMPLETED, seed))
    held = await runs.claim(FIRST, 10, 60)
    assert len(held) == 5
    await _expire(db)
    taken = await runs.claim(SECOND, 2, 60)
    renewed = (await runs.renew(FIRST, [c.lease for c in held], 60)).renewed
    assert renewed == {c.lease.run_id for c in held} - {c.lease.run_id for c in taken}
    lost = await runs.taken_over(FIRST, [c.lease for c in held])
    assert lost == {c.lease.run_id for c in taken}


async def test_released_runs_are_claimable_at_once(db: Database, runs: RunStore) -> None:
    await runs.submit(sample_brief(Ending.COMPLETED, 9))
    [claimed] = await runs.claim(FIRST, 1, 600)
    assert await runs.release(FIRST, [claimed.lease]) == {claimed.lease.run_id}
    [again] = await runs.claim(SECOND, 1, 600)
    assert again.lease == Lease(claimed.lease.run_id, LeaseToken(claimed.lease.token + 1))


async def test_a_claim_gets_every_output_even_one_committed_after_its_snapshot(db: Database, runs: RunStore) -> None:
    """A step commit that lands between a claim's snapshot and its lock on the row: the claim still gets its output.

    The race is microseconds wide; a trigger makes it certain. It inserts the strategy's output when
    the claim updates the run row, committed with the claim but after the snapshot the claim read
    its outputs from, as a previous holder's commit landing just before the lock would be.
    """
    brief = sample_brief(Ending.COMPLETED, 7)
    run_id, _ = await runs.submit(brief)
    [first] = await runs.claim(FIRST, 1, 60)
    steps = StepStore(db, FIRST)
    for step in (Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY):
        await steps.commit_step(step, [await step_write(first.lease, brief, step)])
    [kept] = await db.fetch("SELECT output::text AS output FROM step_outputs WHERE run_id = $1 AND step = 1", run_id)
    await db.fetch("DELETE FROM step_outputs WHERE run_id = $1 AND step = 1", run_id)
    await _expire(db)
    await db.fetch(
        f"""
        CREATE FUNCTION late_output() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO step_outputs (run_id, step, output) VALUES (NEW.id, 1, '{kept["output"]}'::json)
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$
        """
    )
    await db.fetch("CREATE TRIGGER late AFTER UPDATE ON workflow_runs FOR EACH ROW EXECUTE FUNCTION late_output()")

    [second] = await runs.claim(SECOND, 1, 60)

    assert second.next_step is Step.GENERATE_DRAFT
    assert set(second.outputs) == {Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY}
    assert second.outputs[Step.GENERATE_STRATEGY] == json.loads(kept["output"])
