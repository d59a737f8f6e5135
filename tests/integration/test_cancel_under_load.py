"""Cancels at random moments under load: every acknowledged cancel ends compensated, every refused one completed.

Runs with slow calls at every step (and an undo on each) go through a daemon while cancels arrive in
bursts at random moments. Whatever a cancel said, the run ends one way, whole: compensated with no row
left and each of its undos run at most once, or completed with every row (a cancel that lost the race
with the last step, or that was refused because the run had completed).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from sagad import CancelOutcome, Client, RunFilter, RunStatus
from sagad.content.pipeline import builtin_pipeline
from sagad.domain.pipeline import Pipeline, StepCall, StepContext, StepResult, UndoContext
from sagad.domain.runs import RunId
from sagad.domain.steps import Step
from sagad.store.audit import audit_database
from sagad.store.db import Database
from tests.helpers import rows_of, running_daemon

pytestmark = pytest.mark.anyio

BRIEF = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())
RUNS = 120


class SlowSteps:
    """Each step waits 0 to 60 ms before its call, the last 1 to 1.5 s; each has an undo that counts its calls."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.undone: Counter[tuple[RunId, Step]] = Counter()

    def slowed(self, step: Step, call: StepCall) -> StepCall:
        # The last call is the slow one (a delivery): a cancel then mostly finds a run in flight, and its
        # daemon has a renewal tick or two to send it back before the run could complete.
        longest = (1.0, 1.5) if step.is_last else (0.0, 0.06)

        async def slow(context: StepContext) -> StepResult:
            await anyio.sleep(self.random.uniform(*longest))
            return await call(context)

        return slow

    def undo_of(self, step: Step):  # type: ignore[no-untyped-def]
        async def undo(context: UndoContext) -> None:
            self.undone[(context.run_id, step)] += 1

        return undo

    def pipeline(self) -> Pipeline:
        builtin = builtin_pipeline()
        specs = tuple(
            replace(
                spec,
                call=self.slowed(spec.step, spec.call),
                undo=self.undo_of(spec.step),
                instant=False,
                timeout_seconds=30,
            )
            for spec in builtin.steps
        )
        return replace(builtin, steps=specs)


@pytest.mark.parametrize("seed", [1, 2])
async def test_every_cancel_ends_one_way_whole(database_url: str, db: Database, seed: int) -> None:
    steps = SlowSteps(seed)
    chooser = random.Random(seed)
    answers: dict[RunId, CancelOutcome] = {}
    async with Client(database_url) as client, running_daemon(db, pipeline=steps.pipeline(), lease_seconds=1.5):
        # Intake paused: the daemon claims none of them, so the first burst finds them pending.
        await client.pause_intake("load test")
        ids = await client.submit_many([BRIEF] * RUNS)
        await anyio.sleep(0.2)  # a few of the daemon's polls (50 ms)
        assert (await client.count(RunFilter(statuses=frozenset({RunStatus.PENDING})))) == RUNS
        for result in await client.cancel(chooser.sample(ids, 12), f"burst {seed}"):
            answers[result.run_id] = result.outcome
        await client.resume_intake()
        with anyio.fail_after(60):
            for _ in range(8):
                await anyio.sleep(chooser.uniform(0, 0.3))
                burst = chooser.sample(ids, 12)
                for result in await client.cancel(burst, f"burst {seed}"):
                    answers.setdefault(result.run_id, result.outcome)
            ended = {run_id: await client.wait(run_id, 30) for run_id in ids}
    assert answers, "no cancel was made"
    for run_id, outcome in answers.items():
        run = ended[run_id]
        rows = await rows_of(db, run_id)
        if run.status is RunStatus.COMPENSATED:
            assert outcome in (CancelOutcome.COMPENSATED, CancelOutcome.REQUESTED, CancelOutcome.ALREADY_REQUESTED)
            assert run.last_error == f"cancelled: burst {seed}", run
            assert set(rows.values()) == {0}, (run_id, rows)
        else:
            # Refused (it had completed), or it won the race with its last step: whole, never half.
            assert run.status is RunStatus.COMPLETED
            assert all(rows[table] > 0 for table in ("onboarding_brief", "delivery_packages")), rows
            assert not any(key[0] == run_id for key in steps.undone)
    assert all(count == 1 for count in steps.undone.values()), steps.undone
    assert {run.status for run in ended.values()} <= {RunStatus.COMPLETED, RunStatus.COMPENSATED}
    # The bursts hit runs in every state: some pending, some in flight (sent backward by the daemon).
    sent_back = [
        r for r, o in answers.items() if o is CancelOutcome.REQUESTED and ended[r].status is RunStatus.COMPENSATED
    ]
    assert sent_back, Counter(answers.values())
    assert CancelOutcome.COMPENSATED in answers.values(), Counter(answers.values())
    assert (await audit_database(db)).clean
