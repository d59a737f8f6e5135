"""The ledger: every run leaves it exactly once, room for more, metrics, and watched calls cancelled."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
import pytest

from sagad.actors.ledger import Ledger
from sagad.domain.runs import Lease, LeaseToken, RunId, RunStatus
from sagad.metrics import Metrics
from tests.unit.fakes import sample

pytestmark = pytest.mark.anyio


def lease(n: int, token: int = 1) -> Lease:
    return Lease(RunId(uuid.UUID(int=n)), LeaseToken(token))


Leave = Callable[[Ledger, Lease], None]
LEAVINGS: dict[str, Leave] = {
    "finish": lambda ledger, held: ledger.finish(held, RunStatus.COMPLETED, 0.5),
    "lose": lambda ledger, held: ledger.lose([held], "renewal"),
    "drop": lambda ledger, held: ledger.drop([held]),
}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.mark.parametrize("first", LEAVINGS)
@pytest.mark.parametrize("then", LEAVINGS)
async def test_a_held_run_leaves_the_ledger_exactly_once(metrics: Metrics, first: str, then: str) -> None:
    ledger = Ledger(10, metrics)
    ledger.hold(lease(1))
    ledger.hold(lease(2))

    LEAVINGS[first](ledger, lease(1))
    assert len(ledger) == 1
    assert not ledger.holds(lease(1))
    LEAVINGS[then](ledger, lease(1))

    assert ledger.snapshot() == [lease(2)]
    assert sample(metrics, "sagad_leases_held") == 1
    assert sample(metrics, "sagad_leases_lost_total", found_by="renewal") == (first == "lose")


async def test_a_stale_lease_leaves_the_current_holder_in_the_ledger(metrics: Metrics) -> None:
    ledger = Ledger(10, metrics)
    ledger.hold(lease(1, token=2))

    ledger.drop([lease(1, token=1)])
    ledger.lose([lease(1, token=1)], "step")

    assert ledger.holds(lease(1, token=2))
    assert sample(metrics, "sagad_leases_lost_total", found_by="step") == 0


async def test_finish_counts_the_outcome_and_the_run_duration(metrics: Metrics) -> None:
    ledger = Ledger(10, metrics)
    ledger.hold(lease(1))
    ledger.hold(lease(2))

    ledger.finish(lease(1), RunStatus.COMPLETED, 1.5)
    ledger.finish(lease(2), RunStatus.COMPENSATED, 0.25)

    assert len(ledger) == 0
    assert sample(metrics, "sagad_runs_total", outcome="completed") == 1
    assert sample(metrics, "sagad_runs_total", outcome="compensated") == 1
    assert sample(metrics, "sagad_run_duration_seconds_sum", outcome="completed") == 1.5
    assert sample(metrics, "sagad_run_duration_seconds_count", outcome="compensated") == 1


async def test_lose_counts_only_the_runs_still_held_by_what_found_them(metrics: Metrics) -> None:
    ledger = Ledger(10, metrics)
    for n in (1, 2, 3):
        ledger.hold(lease(n))

    ledger.lose([lease(1), lease(2), lease(9)], "renewal")
    ledger.lose([lease(2), lease(3)], "compensation")

    assert ledger.snapshot() == []
    assert sample(metrics, "sagad_leases_lost_total", found_by="renewal") == 2
    assert sample(metrics, "sagad_leases_lost_total", found_by="compensation") == 1


async def test_room_is_the_capacity_left(metrics: Metrics) -> None:
    ledger = Ledger(3, metrics)
    assert ledger.room() == 3
    for n in range(5):  # a claim may overfill it; room never goes negative
        ledger.hold(lease(n))
    assert ledger.room() == 0
    ledger.drop([lease(0), lease(1), lease(2)])
    assert ledger.room() == 1


async def test_wait_for_room_returns_once_a_run_leaves(metrics: Metrics) -> None:
    ledger = Ledger(2, metrics)
    ledger.hold(lease(1))
    ledger.hold(lease(2))
    got_room = anyio.Event()

    async def claimer() -> None:
        await ledger.wait_for_room()
        got_room.set()

    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer)
            await anyio.wait_all_tasks_blocked()
            ledger.drop([lease(9)])  # nothing left: still no room
            await anyio.wait_all_tasks_blocked()
            assert not got_room.is_set()
            ledger.finish(lease(1), RunStatus.COMPLETED, 0.1)
            await got_room.wait()
    await ledger.wait_for_room()  # room now: returns at once


async def test_wait_until_empty_returns_when_the_last_run_leaves(metrics: Metrics) -> None:
    ledger = Ledger(2, metrics)
    ledger.hold(lease(1))
    ledger.hold(lease(2))
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ledger.wait_until_empty)
            ledger.lose([lease(1)], "renewal")
            await anyio.wait_all_tasks_blocked()
            ledger.drop([lease(2)])


@pytest.mark.parametrize("leave", ["lose", "drop"])
async def test_a_watched_call_is_cancelled_when_its_run_leaves_the_ledger(metrics: Metrics, leave: str) -> None:
    ledger = Ledger(10, metrics)
    ledger.hold(lease(1))
    ledger.hold(lease(2))
    scopes = {n: anyio.CancelScope() for n in (1, 2)}
    watching = anyio.Event()

    async def call(n: int) -> None:
        with scopes[n]:
            assert ledger.watch(lease(n), scopes[n])
            if n == 2:
                watching.set()
            await anyio.sleep_forever()

    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 1)
            tg.start_soon(call, 2)
            await watching.wait()
            LEAVINGS[leave](ledger, lease(1))
            await anyio.wait_all_tasks_blocked()
            assert scopes[1].cancelled_caught
            assert not scopes[2].cancel_called
            ledger.unwatch(lease(2))
            ledger.drop([lease(2)])  # unwatched: dropping it cancels nothing
            await anyio.wait_all_tasks_blocked()
            assert not scopes[2].cancel_called
            tg.cancel_scope.cancel()


async def test_watching_a_run_no_longer_held_cancels_at_once(metrics: Metrics) -> None:
    ledger = Ledger(10, metrics)
    scope = anyio.CancelScope()
    assert not ledger.watch(lease(1), scope)
    assert scope.cancel_called
