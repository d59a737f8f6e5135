"""The supervisor restarts an actor that crashed and gives back the runs it held.

``Supervisor.run`` builds its stores and its submission listener from the ``Database`` itself, so it
cannot run on the fakes; these tests drive ``Supervisor._supervise`` (and through it ``_give_back``)
on a supervisor whose ``runs`` are the fake store. The database handed to the constructor is never used.
"""

from __future__ import annotations

from functools import partial
from typing import cast

import anyio
import pytest

from sagad.actors.compensator import Compensator
from sagad.actors.messages import Compensation, StepWork
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import PermanentDatabaseError, TransientDatabaseError
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.supervisor import Settings, Supervisor
from tests.unit.fakes import DEADLINE, ME, CrashAfterCommit, Scene, echo, receive, spec_of

pytestmark = pytest.mark.anyio

SECOND = Step.GENERATE_STRATEGY


def supervising(scene: Scene) -> Supervisor:
    """A supervisor whose run leases are the fake store's, sharing the scene's metrics and ledger."""
    supervisor = Supervisor(cast(Database, None), Settings(worker_id=ME, restart_delay_seconds=0.001), scene.metrics)
    supervisor.runs = cast(RunStore, scene.store)  # it releases runs through the RunLeases port only
    scene.ledger = supervisor.ledger
    return supervisor


@pytest.mark.parametrize("release", ["works", "transient", "permanent"])
async def test_a_step_actor_that_crashed_gives_its_runs_back_and_is_restarted(release: str) -> None:
    scene = Scene()
    supervisor = supervising(scene)
    faults = CrashAfterCommit(SECOND)
    actor = scene.actor(spec_of(SECOND, echo), faults=faults)
    *crashed_with, later = await scene.runs_at(SECOND, [{"n": 1}, {"n": 2}, {"n": 3}])
    scene.ledger.drop([later.lease])  # held only once the others are given back
    if release != "works":
        scene.store.fail("release", TransientDatabaseError if release == "transient" else PermanentDatabaseError)
    inbox_in, inbox = anyio.create_memory_object_stream[StepWork](10)
    forward_in, forward = anyio.create_memory_object_stream[StepWork](10)
    failures_in, failures = anyio.create_memory_object_stream[Compensation](10)
    with inbox_in, inbox, forward_in, forward, failures_in, failures, anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for work in crashed_with:  # waiting together: one batch, one commit
                inbox_in.send_nowait(work)
            run = partial(actor.run, inbox, forward_in, failures_in)
            tg.start_soon(supervisor._supervise, SECOND.value, actor, run)
            await scene.ledger.wait_until_empty()  # both given back
            scene.ledger.hold(later.lease)
            await inbox_in.send(later)
            [handed_on] = await receive(forward, 1)  # by the restarted actor
            tg.cancel_scope.cancel()

    assert faults.crashed_with == [work.lease for work in crashed_with]
    assert handed_on.lease == later.lease
    assert scene.sample("sagad_actor_restarts_total", actor=SECOND.value) == 1
    for work in crashed_with:
        assert not scene.ledger.holds(work.lease)
        stored = scene.store.runs[work.lease.run_id]
        assert stored.next_step is Step.GENERATE_DRAFT  # committed before the crash: resumed after it
        assert stored.claimable is (release == "works")  # else its lease expires first
    assert scene.store.released == ([work.lease.run_id for work in crashed_with] if release == "works" else [])


async def test_a_compensator_that_crashed_on_a_refused_run_gives_it_back_and_goes_on() -> None:
    scene = Scene()
    supervisor = supervising(scene)
    failed = [
        scene.store.submit({"n": n}, status=RunStatus.COMPENSATING, at=SECOND, failed_step=SECOND) for n in range(3)
    ]
    claimed = await scene.store.claim(ME, 3, 30.0)
    for run in claimed:
        scene.ledger.hold(run.lease)
    good, bad, later = (Compensation(run.lease, SECOND, "no") for run in claimed)
    scene.store.fail("compensate", PermanentDatabaseError, runs=[bad.lease.run_id], times=None)
    compensator = Compensator(store=scene.store, ledger=scene.ledger, metrics=scene.metrics, batch_limit=10)
    send, inbox = anyio.create_memory_object_stream[Compensation](10)
    with send, inbox, anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor._supervise, "compensator", compensator, partial(compensator.run, inbox))
            send.send_nowait(good)
            send.send_nowait(bad)
            await scene.store.until(lambda: scene.store.released == [bad.lease.run_id])
            await send.send(later)
            await scene.store.until(lambda: scene.store.runs[later.lease.run_id].status is RunStatus.COMPENSATED)
            tg.cancel_scope.cancel()

    assert scene.store.by_status(RunStatus.COMPENSATED) == {failed[0], failed[2]}
    assert scene.store.runs[failed[1]].claimable
    assert len(scene.ledger) == 0
    assert scene.sample("sagad_actor_restarts_total", actor="compensator") == 1


async def test_an_actor_that_returns_is_not_restarted() -> None:
    scene = Scene()
    supervisor = supervising(scene)
    compensator = Compensator(store=scene.store, ledger=scene.ledger, metrics=scene.metrics, batch_limit=10)
    send, inbox = anyio.create_memory_object_stream[Compensation](1)
    send.close()
    with inbox, anyio.fail_after(DEADLINE):
        await supervisor._supervise("compensator", compensator, partial(compensator.run, inbox))
    assert scene.sample("sagad_actor_restarts_total", actor="compensator") == 0
