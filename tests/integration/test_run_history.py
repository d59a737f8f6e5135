"""Each run's history against a daemon: a step's calls, its undos, the rows a compensation deleted, and the
cancel and retry metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from sagad import CancelOutcome, Client, RunStatus
from sagad.cli.operate import history_lines
from sagad.content.pipeline import builtin_pipeline
from sagad.domain.operations import HistoryEvent
from sagad.domain.pipeline import RetryPolicy, StepContext, StepResult, StepSpec, UndoContext
from sagad.domain.steps import Step
from sagad.errors import StepFailed, TransientStepError
from sagad.store.db import Database
from tests.chaos.waiting import wait_until
from tests.helpers import rows_of, running_daemon
from tests.unit.fakes import sample

pytestmark = pytest.mark.anyio

BRIEF = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())
QUICK_RETRIES = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.01, jitter_seconds=0)
ATTEMPT_SECONDS = 0.02


class FlakyThenFailing:
    """Strategy busy twice then done (its undo busy once); the draft waits to be let go, then fails the run."""

    def __init__(self) -> None:
        builtin = builtin_pipeline()
        self._strategy = builtin.spec(Step.GENERATE_STRATEGY).call
        self.strategy_busy = 0
        self.undo_busy = 0
        self.drafting = anyio.Event()
        self.fail_draft = anyio.Event()
        self.pipeline = replace(builtin, steps=tuple(self._changed(spec) for spec in builtin.steps))

    def _changed(self, spec: StepSpec) -> StepSpec:
        if spec.step is Step.GENERATE_STRATEGY:
            return replace(spec, call=self.strategy, undo=self.undo_strategy, retry=QUICK_RETRIES, instant=False)
        if spec.step is Step.GENERATE_DRAFT:
            return replace(spec, call=self.draft, timeout_seconds=600, instant=False)
        return spec

    async def strategy(self, context: StepContext) -> StepResult:
        await anyio.sleep(ATTEMPT_SECONDS)
        if self.strategy_busy < 2:
            self.strategy_busy += 1
            raise TransientStepError(f"strategy service busy ({self.strategy_busy})")
        return await self._strategy(context)

    async def undo_strategy(self, _: UndoContext) -> None:
        if self.undo_busy < 1:
            self.undo_busy += 1
            raise TransientStepError("strategy service busy for the undo")

    async def draft(self, _: StepContext) -> StepResult:
        self.drafting.set()
        await self.fail_draft.wait()
        raise StepFailed("the draft is off brief")


def committed(events: list[HistoryEvent], step: Step) -> HistoryEvent:
    [event] = [e for e in events if e.event == "committed" and e.step == step.value]
    return event


def assert_strategy_call_kept(event: HistoryEvent, token: int) -> None:
    assert event.attempt == 3
    assert event.retry_reasons == "strategy service busy (1); strategy service busy (2)"
    assert event.call_ms is not None and event.call_ms >= 3 * ATTEMPT_SECONDS * 1000 * 0.9
    assert (event.token, event.worker) == (token, "test-daemon")


async def test_a_step_retried_twice_shows_its_attempts_reasons_time_and_lease_live_and_once_compensated(
    database_url: str, db: Database
) -> None:
    flaky = FlakyThenFailing()
    async with Client(database_url) as client, running_daemon(db, pipeline=flaky.pipeline):
        run_id = await client.submit(BRIEF)
        with anyio.fail_after(10):
            await flaky.drafting.wait()
        live = await client.history(run_id)
        written = {table: n for table, n in (await rows_of(db, run_id)).items() if n}
        [claim] = [e for e in live if e.event == "claimed"]
        assert claim.token is not None
        assert_strategy_call_kept(committed(live, Step.GENERATE_STRATEGY), claim.token)
        first = committed(live, Step.NORMALIZE_BRIEF)
        assert (first.attempt, first.retry_reasons, first.token, first.worker) == (1, None, claim.token, "test-daemon")
        assert first.call_ms is not None and first.call_ms >= 0

        flaky.fail_draft.set()
        with anyio.fail_after(10):
            run = await client.wait(run_id, 10)
        events = await client.history(run_id)
    assert run.status is RunStatus.COMPENSATED
    # Kept from the outputs the compensation deleted: the same measures as while the run was live.
    assert_strategy_call_kept(committed(events, Step.GENERATE_STRATEGY), claim.token)
    [failed_call] = [e for e in events if e.event == "call failed"]
    assert (failed_call.step, failed_call.attempt, failed_call.token) == ("generate_draft", 1, claim.token)
    undos = [(e.step, e.detail, e.attempt, e.retry_reasons) for e in events if e.event == "undo"]
    assert undos == [
        ("generate_strategy", "undone", 2, "strategy service busy for the undo"),
        ("normalize_brief", "no undo", None, None),
    ]
    [deleted] = [e for e in events if e.event == "deleted"]
    assert deleted.rows == written
    assert [e.event for e in events][-3:] == ["undo", "deleted", "compensated"]
    shown = history_lines(events)
    assert "retried: strategy service busy (1); strategy service busy (2)" in shown
    assert "onboarding_brief 1" in shown and "no undo" in shown
    assert json.dumps([e.as_dict() for e in events])  # the --json view holds every field


async def test_a_cancel_carried_out_is_timed_and_a_retry_claimed_is_counted(database_url: str, db: Database) -> None:
    flaky = FlakyThenFailing()
    async with Client(database_url) as client, running_daemon(db, pipeline=flaky.pipeline, lease_seconds=3) as daemon:
        run_id = await client.submit(BRIEF)
        with anyio.fail_after(10):
            await flaky.drafting.wait()
        await anyio.sleep(0.05)
        [result] = await client.cancel([run_id], "withdrawn")
        assert result.outcome is CancelOutcome.REQUESTED
        with anyio.fail_after(10):
            run = await client.wait(run_id, 10)
        assert run.status is RunStatus.COMPENSATED

        # The client may hear of the compensation before the daemon has read its commit's answer.
        async def observed() -> bool:
            return sample(daemon.metrics, "sagad_cancel_to_compensated_seconds_count") >= 1

        await wait_until(observed, seconds=5, every=0.01)
        waited = sample(daemon.metrics, "sagad_cancel_to_compensated_seconds_sum")
        assert sample(daemon.metrics, "sagad_cancel_to_compensated_seconds_count") == 1
        assert 0 < waited < 10
        assert sample(daemon.metrics, "sagad_retries_started_total") == 0

        [retried] = await client.retry([run_id])
        assert retried.new_run is not None
        flaky.fail_draft.set()  # the retry fails again, at the draft: it was claimed, once
        with anyio.fail_after(10):
            await client.wait(retried.new_run, 10)
        assert sample(daemon.metrics, "sagad_retries_started_total") == 1
        # A failure is no cancel: the histogram saw only the cancelled run.
        assert sample(daemon.metrics, "sagad_cancel_to_compensated_seconds_count") == 1
