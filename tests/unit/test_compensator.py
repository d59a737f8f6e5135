"""The compensator: batches what waits, deletes per table, finishes owned runs, retries skipped ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from sagad.actors.compensator import Compensator
from sagad.actors.messages import Compensation
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import PermanentDatabaseError, TransientDatabaseError
from tests.unit.fakes import DEADLINE, Scene, hold

pytestmark = pytest.mark.anyio

DRAFT = Step.GENERATE_DRAFT
TABLES_UP_TO_DRAFT = frozenset(table for step in Step if step <= DRAFT for table in step.tables)


@pytest.fixture
def scene() -> Scene:
    return Scene()


async def compensating(scene: Scene, n: int) -> list[Compensation]:
    """Held runs that failed at the draft step after writing a row in every table before it."""
    for i in range(n):
        run_id = scene.store.submit({"n": i}, status=RunStatus.COMPENSATING, at=DRAFT, failed_step=DRAFT)
        run = scene.store.runs[run_id]
        run.outputs = {Step.NORMALIZE_BRIEF: {"n": i}, Step.GENERATE_STRATEGY: "plan"}
        run.rows = {"onboarding_brief": [{}], "onboarding_intake": [{}, {}], "strategy_document": [{}]}
    claimed = await hold(scene.store, scene.ledger, n)
    return [Compensation(claim.lease, DRAFT, "no", tables=TABLES_UP_TO_DRAFT) for claim in claimed]


@asynccontextmanager
async def running(
    scene: Scene, compensator: Compensator, pending: Sequence[Compensation] = ()
) -> AsyncIterator[MemoryObjectSendStream[Compensation]]:
    send, inbox = anyio.create_memory_object_stream[Compensation](100)
    with send, inbox, anyio.fail_after(DEADLINE):
        for message in pending:
            send.send_nowait(message)
        async with anyio.create_task_group() as tg:
            tg.start_soon(compensator.run, inbox)
            yield send
            tg.cancel_scope.cancel()


def compensator_of(scene: Scene, batch_limit: int = 100) -> Compensator:
    return Compensator(store=scene.store, ledger=scene.ledger, metrics=scene.metrics, batch_limit=batch_limit)


def compensated(scene: Scene, messages: Sequence[Compensation]) -> bool:
    return {m.lease.run_id for m in messages} <= scene.store.by_status(RunStatus.COMPENSATED)


async def test_what_waits_is_compensated_in_one_batch_and_the_runs_finish(scene: Scene) -> None:
    messages = await compensating(scene, 3)
    async with running(scene, compensator_of(scene), messages):
        await scene.store.until(lambda: compensated(scene, messages))

    assert scene.store.compensations == [[m.lease.run_id for m in messages]]
    assert len(scene.ledger) == 0
    assert scene.sample("sagad_runs_total", outcome="compensated") == 3
    assert scene.sample("sagad_compensated_rows_total", table="onboarding_intake") == 6
    assert scene.sample("sagad_compensated_rows_total", table="strategy_document") == 3
    assert scene.sample("sagad_compensated_rows_total", table="step_outputs") == 6
    assert all(not scene.store.runs[m.lease.run_id].rows for m in messages)


async def test_only_the_tables_the_failures_collected_are_compensated(scene: Scene) -> None:
    [message] = await compensating(scene, 1)
    narrow = Compensation(message.lease, DRAFT, "no", tables=frozenset({"onboarding_intake"}))
    async with running(scene, compensator_of(scene), [narrow]):
        await scene.store.until(lambda: compensated(scene, [narrow]))
    assert scene.sample("sagad_compensated_rows_total", table="onboarding_intake") == 2
    assert scene.sample("sagad_compensated_rows_total", table="onboarding_brief") == 0


async def test_a_batch_takes_no_more_than_the_batch_limit(scene: Scene) -> None:
    messages = await compensating(scene, 5)
    async with running(scene, compensator_of(scene, batch_limit=2), messages):
        await scene.store.until(lambda: compensated(scene, messages))
    assert [len(call) for call in scene.store.compensations] == [2, 2, 1]


async def test_a_run_skipped_by_the_store_is_compensated_again_later(scene: Scene) -> None:
    locked, free, late = await compensating(scene, 3)
    scene.store.lock(locked.lease.run_id)
    async with running(scene, compensator_of(scene), [locked, free]) as inbox:
        await scene.store.until(lambda: len(scene.store.compensations) == 1)
        await inbox.send(late)
        await scene.store.until(lambda: compensated(scene, [locked, free, late]))

    assert scene.store.compensations == [
        [locked.lease.run_id, free.lease.run_id],
        [locked.lease.run_id, late.lease.run_id],
    ]
    assert scene.sample("sagad_leases_lost_total", found_by="compensation") == 0
    assert scene.sample("sagad_runs_total", outcome="compensated") == 3


async def test_a_run_whose_fence_fails_is_counted_fenced_and_lost(scene: Scene) -> None:
    taken, kept = await compensating(scene, 2)
    scene.store.take_over(taken.lease.run_id)
    async with running(scene, compensator_of(scene), [taken, kept]):
        await scene.store.until(lambda: compensated(scene, [kept]))
        await scene.ledger.wait_until_empty()
    assert scene.store.runs[taken.lease.run_id].status is RunStatus.COMPENSATING  # the peer compensates it
    assert scene.sample("sagad_fenced_writes_total", stage="compensation") == 1
    assert scene.sample("sagad_leases_lost_total", found_by="compensation") == 1


async def test_a_transient_store_error_retries_the_batch(scene: Scene) -> None:
    messages = await compensating(scene, 2)
    scene.store.fail("compensate", TransientDatabaseError, times=1)
    async with running(scene, compensator_of(scene), messages):
        await scene.store.until(lambda: compensated(scene, messages))
    assert len(scene.store.compensations) == 2
    assert scene.sample("sagad_compensation_failures_total") == 1
    assert scene.sample("sagad_db_errors_total", kind="transient") == 1


async def test_a_permanent_store_error_splits_the_batch_and_the_offending_run_crashes_the_actor(
    scene: Scene,
) -> None:
    first, second, bad = await compensating(scene, 3)
    scene.store.fail("compensate", PermanentDatabaseError, runs=[bad.lease.run_id], times=None)
    compensator = compensator_of(scene)
    send, inbox = anyio.create_memory_object_stream[Compensation](10)
    with send, inbox, anyio.fail_after(DEADLINE), pytest.raises(PermanentDatabaseError):
        for message in (first, second, bad):
            send.send_nowait(message)
        await compensator.run(inbox)

    assert scene.store.compensations == [
        [first.lease.run_id, second.lease.run_id, bad.lease.run_id],
        [first.lease.run_id],
        [second.lease.run_id],
        [bad.lease.run_id],
    ]
    assert compensated(scene, [first, second])
    assert scene.store.runs[bad.lease.run_id].status is RunStatus.COMPENSATING
    assert bad.lease in compensator.abandon()  # the supervisor gives it back; a later claim tries again
    assert scene.sample("sagad_db_errors_total", kind="permanent") == 2


async def test_a_permanent_store_error_compensates_every_other_run_of_the_batch(scene: Scene) -> None:
    bad, after = await compensating(scene, 2)
    scene.store.fail("compensate", PermanentDatabaseError, runs=[bad.lease.run_id], times=None)
    send, inbox = anyio.create_memory_object_stream[Compensation](10)
    with send, inbox, anyio.fail_after(DEADLINE), pytest.raises(PermanentDatabaseError):
        send.send_nowait(bad)
        send.send_nowait(after)
        await compensator_of(scene).run(inbox)
    assert compensated(scene, [after])


async def test_a_run_skipped_beside_a_refused_one_is_given_back_with_it(scene: Scene) -> None:
    locked, bad = await compensating(scene, 2)
    scene.store.lock(locked.lease.run_id)
    scene.store.fail("compensate", PermanentDatabaseError, runs=[bad.lease.run_id], times=None)
    compensator = compensator_of(scene)
    send, inbox = anyio.create_memory_object_stream[Compensation](10)
    with send, inbox, anyio.fail_after(DEADLINE), pytest.raises(PermanentDatabaseError):
        send.send_nowait(locked)
        send.send_nowait(bad)
        await compensator.run(inbox)
    assert set(compensator.abandon()) == {locked.lease, bad.lease}
    assert scene.store.runs[locked.lease.run_id].status is RunStatus.COMPENSATING


async def test_a_retried_batch_takes_no_more_than_the_batch_limit(scene: Scene) -> None:
    first, second, late = await compensating(scene, 3)
    scene.store.lock(first.lease.run_id)
    scene.store.lock(second.lease.run_id)
    async with running(scene, compensator_of(scene, batch_limit=2), [first, second]) as inbox:
        await scene.store.until(lambda: len(scene.store.compensations) == 1)
        await inbox.send(late)
        await scene.store.until(lambda: compensated(scene, [first, second, late]))
    assert max(len(call) for call in scene.store.compensations) <= 2


async def test_a_compensator_that_crashed_gives_back_the_batch_it_held(scene: Scene) -> None:
    messages = await compensating(scene, 2)
    gate = scene.store.gate("compensate")
    compensator = compensator_of(scene)
    async with running(scene, compensator, messages):
        await gate.entered.wait()
        assert compensator.abandon() == [m.lease for m in messages]
        assert compensator.abandon() == []
        gate.open()


async def test_a_closed_inbox_ends_the_compensator_once_its_skipped_runs_are_compensated(scene: Scene) -> None:
    locked, free = await compensating(scene, 2)
    scene.store.lock(locked.lease.run_id)
    send, inbox = anyio.create_memory_object_stream[Compensation](10)
    with inbox, anyio.fail_after(DEADLINE):
        with send:
            send.send_nowait(locked)
            send.send_nowait(free)
        await compensator_of(scene).run(inbox)
    assert compensated(scene, [locked, free])
