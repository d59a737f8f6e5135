"""One timer for a step's call timeouts: every scope still open at its time is cancelled, no other."""

from __future__ import annotations

import anyio
import pytest

from sagad.actors.timeouts import Timeouts

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the timer is the asyncio loop's, as the daemon's driver needs asyncio


async def test_a_scope_open_past_its_time_is_cancelled_and_one_closed_before_is_not() -> None:
    timeouts = Timeouts(0.05)
    ended: dict[str, bool] = {}

    async def call(name: str, seconds: float) -> None:
        with timeouts.scope() as scope:
            await anyio.sleep(seconds)
        ended[name] = scope.cancelled_caught

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "quick", 0.01)
        tg.start_soon(call, "slow", 5.0)
        await anyio.sleep(0.02)
        tg.start_soon(call, "later and slow", 5.0)  # opened after the quick one closed: a new oldest

    assert ended == {"quick": False, "slow": True, "later and slow": True}


async def test_scopes_opened_one_after_another_each_get_their_whole_time() -> None:
    timeouts = Timeouts(0.1)
    waited: list[float] = []

    async def call() -> None:
        started = anyio.current_time()
        with timeouts.scope():
            await anyio.sleep(5.0)
        waited.append(anyio.current_time() - started)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
            await anyio.sleep(0.04)

    assert len(waited) == 3
    assert all(0.1 <= w < 0.3 for w in waited), waited


def test_a_timeouts_object_keeps_working_on_a_new_event_loop() -> None:
    timeouts = Timeouts(0.02)

    async def one() -> bool:
        with timeouts.scope() as scope:
            await anyio.sleep(5.0)
        return scope.cancelled_caught

    async def open_and_leave() -> None:
        with timeouts.scope():
            pass  # its timer stays scheduled on this loop, which then ends

    anyio.run(open_and_leave)
    assert anyio.run(one) is True
