"""Scenes the conformance tests start from, built through the ports wherever a port can build them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagad.content.samples import Ending, sample_brief
from sagad.domain.rows import StepWrite
from sagad.domain.runs import ClaimedRun, Lease, RunId, WorkerId
from sagad.domain.steps import Step
from tests.conformance.harness import Harness, output_of
from tests.helpers import step_write
from tests.unit.fakes import ME

LEASE_SECONDS = 60.0
"""Longer than any test: a lease runs out only when a test says so."""


@dataclass(frozen=True, slots=True)
class Held:
    """A run claimed by a test, with the brief it was submitted with."""

    run: ClaimedRun
    brief: dict[str, Any]

    @property
    def lease(self) -> Lease:
        return self.run.lease

    @property
    def run_id(self) -> RunId:
        return self.run.lease.run_id

    async def write(self, step: Step, lease: Lease | None = None) -> StepWrite:
        """What the built-in pipeline commits for ``step`` of this run (under ``lease``, else its own)."""
        return await step_write(lease or self.lease, self.brief, step)


async def submit(h: Harness, count: int, ending: Ending = Ending.COMPLETED) -> list[tuple[RunId, dict[str, Any]]]:
    """``count`` runs submitted one after the other."""
    briefs = [sample_brief(ending, seed) for seed in range(count)]
    return [(await h.submit(brief), brief) for brief in briefs]


async def claimed(h: Harness, count: int, worker: WorkerId = ME) -> list[Held]:
    """``count`` new runs, claimed by ``worker``, in the order they were submitted."""
    submitted = await submit(h, count)
    runs = {run.lease.run_id: run for run in await h.leases.claim(worker, count, LEASE_SECONDS)}
    assert set(runs) == {run_id for run_id, _ in submitted}
    return [Held(runs[run_id], brief) for run_id, brief in submitted]


async def advance(h: Harness, held: Held, to: Step) -> dict[Step, Any]:
    """Commit every step before ``to`` for the run, one commit a step; the outputs committed."""
    outputs: dict[Step, Any] = {}
    for step in Step:
        if step >= to:
            break
        write = await held.write(step)
        committed = await h.writer.commit_step(step, [write])
        assert set(committed.owned) == {held.run_id}
        outputs[step] = output_of(write.output)
    return outputs


async def fail_at(h: Harness, held: Held, step: Step, reason: str = "refused") -> None:
    """The run's steps before ``step`` committed, then ``step`` failed: the run is compensating."""
    await advance(h, held, step)
    committed = await h.writer.commit_step(step, [StepWrite(held.lease, failure=reason)])
    assert set(committed.owned) == {held.run_id}


async def complete(h: Harness, held: Held) -> None:
    """Every step committed: the run is completed."""
    await advance(h, held, Step.DELIVER)
    committed = await h.writer.commit_step(Step.DELIVER, [await held.write(Step.DELIVER)])
    assert set(committed.owned) == {held.run_id}


def tables_through(step: Step) -> frozenset[str]:
    """The tables a compensation of a run that failed at ``step`` is given (the relays add each step's)."""
    return frozenset(table for earlier in Step if earlier <= step for table in earlier.tables)
