"""Cancel against a daemon: a call in flight is cancelled and the run sent backward; intake pause holds new runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from sagad import CancelOutcome, Client, RunStatus
from sagad.content.pipeline import builtin_pipeline
from sagad.domain.pipeline import Pipeline, StepContext, StepResult, UndoContext
from sagad.domain.runs import RunId, WorkerId
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.helpers import rows_of, running_daemon

pytestmark = pytest.mark.anyio

BRIEF = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())


class HangingDraft:
    """A draft step whose call never returns until cancelled, with an undo that counts its calls."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = anyio.Event()
        self.undone: list[RunId] = []

    async def call(self, _: StepContext) -> StepResult:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def undo(self, context: UndoContext) -> None:
        self.undone.append(context.run_id)

    def pipeline(self) -> Pipeline:
        builtin = builtin_pipeline()
        specs = tuple(
            replace(spec, call=self.call, undo=self.undo, timeout_seconds=600, instant=False)
            if spec.step is Step.GENERATE_DRAFT
            else spec
            for spec in builtin.steps
        )
        return replace(builtin, steps=specs)


async def test_a_run_cancelled_mid_call_is_compensated_by_its_daemon(database_url: str, db: Database) -> None:
    draft = HangingDraft()
    async with Client(database_url) as client, running_daemon(db, pipeline=draft.pipeline(), lease_seconds=3):
        run_id = await client.submit(BRIEF)
        with anyio.fail_after(10):
            await draft.started.wait()
        [result] = await client.cancel([run_id], "client withdrew", by="ops@test")
        assert result.outcome is CancelOutcome.REQUESTED
        with anyio.fail_after(10):  # within one renewal tick (1 s) and a claim
            await draft.cancelled.wait()
            run = await client.wait(run_id, 10)
        history = await client.history(run_id)
    assert run.status is RunStatus.COMPENSATED
    assert run.last_error == "cancelled: client withdrew"
    assert run.failed_step == "generate_draft"
    assert draft.undone == [run_id]  # the step it was in may have had an effect: its undo ran, once
    assert set((await rows_of(db, run_id)).values()) == {0}
    events = [(e.event, e.step, e.detail) for e in history]
    assert events == [
        ("claimed", None, None),
        ("committed", "normalize_brief", None),
        ("committed", "generate_strategy", None),
        ("cancel requested", None, "client withdrew"),
        ("failed", "generate_draft", "cancelled: client withdrew"),
        ("claimed", None, None),
        ("undo", "generate_draft", "undone"),
        ("undo", "generate_strategy", "no undo"),
        ("undo", "normalize_brief", "no undo"),
        ("deleted", None, None),
        ("compensated", None, "cancelled: client withdrew"),
    ]
    assert {e.worker for e in history if e.event != "cancel requested"} == {"test-daemon"}
    assert history[0].token is not None and history[-2].token == history[0].token + 1


async def test_a_cancelled_run_held_by_a_dead_daemon_is_compensated_by_the_next_claim(
    database_url: str, db: Database
) -> None:
    runs = RunStore(db)
    async with Client(database_url) as client:
        run_id = await client.submit(BRIEF)
        [held] = await runs.claim(WorkerId("dead"), 1, 0.01)
        [result] = await client.cancel([run_id], "withdrawn")
        assert result.outcome is CancelOutcome.REQUESTED
        await anyio.sleep(0.02)  # the dead daemon's lease runs out
        waiting = await runs.sample_statuses()
        assert (waiting.cancels_waiting, waiting.oldest_cancel_seconds > 0) == (1, True)
        [claimed] = await runs.claim(WorkerId("alive"), 1, 30)
        assert claimed.status is RunStatus.COMPENSATING
        assert claimed.failed_step is Step.NORMALIZE_BRIEF
        assert claimed.last_error == "cancelled: withdrawn"
        assert claimed.lease.token == held.lease.token + 1
        await db.fetch("UPDATE workflow_runs SET status = 'compensated', available_at = NULL, finished_at = now()")
        assert (await runs.sample_statuses()).cancels_waiting == 0


async def test_a_renewal_gives_back_a_cancelled_run_instead_of_renewing_it(database_url: str, db: Database) -> None:
    runs = RunStore(db)
    async with Client(database_url) as client:
        first, second = await client.submit(BRIEF), await client.submit(BRIEF)
        held = await runs.claim(WorkerId("w"), 2, 30)
        await client.cancel([first], "withdrawn")
        renewal = await runs.renew(WorkerId("w"), [c.lease for c in held], 30)
        assert (renewal.renewed, renewal.cancelled) == (frozenset({second}), frozenset({first}))
        run = await client.get(first)
        assert (run.status, run.claimed_by, run.failed_step) == (RunStatus.COMPENSATING, None, "normalize_brief")


async def test_paused_intake_claims_no_new_run_but_still_takes_over_started_ones(
    database_url: str, db: Database
) -> None:
    runs = RunStore(db)
    async with Client(database_url) as client:
        started = await client.submit(BRIEF)
        await runs.claim(WorkerId("dead"), 1, 0.01)
        waiting = await client.submit(BRIEF)
        await client.pause_intake("deploy")
        await anyio.sleep(0.02)
        assert [c.lease.run_id for c in await runs.claim(WorkerId("w"), 10, 30)] == [started]
        assert (await runs.sample_statuses()).intake_paused
        await client.resume_intake()
        assert [c.lease.run_id for c in await runs.claim(WorkerId("w"), 10, 30)] == [waiting]
