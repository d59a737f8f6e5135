"""The worker pool: every item handled once, at most ``limit`` at a time, and few idle tasks kept."""

from __future__ import annotations

import anyio
import pytest

from sagad.actors.workers import Workers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the workers wait on the asyncio loop's futures, as the daemon's driver needs asyncio


async def test_every_item_is_handled_once_and_never_more_than_limit_at_a_time() -> None:
    handled: list[int] = []
    busy = most_busy = 0

    async def handle(item: int) -> None:
        nonlocal busy, most_busy
        busy += 1
        most_busy = max(most_busy, busy)
        await anyio.sleep(0.001 * (item % 3))
        busy -= 1
        handled.append(item)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            workers = Workers(handle, 7, tg, keep_idle=2)
            for item in range(200):
                workers.put(item)
            workers.close()

    assert sorted(handled) == list(range(200))
    assert most_busy == 7


async def test_after_a_burst_only_keep_idle_workers_stay_waiting() -> None:
    release, all_started, all_done = anyio.Event(), anyio.Event(), anyio.Event()
    started = done = 0

    async def handle(_: int) -> None:
        nonlocal started, done
        started += 1
        if started == 300:
            all_started.set()
        await release.wait()
        done += 1
        if done == 300:
            all_done.set()  # this worker ends in the same step, before anyone else runs

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            workers = Workers(handle, 1000, tg, keep_idle=5)
            for item in range(300):
                workers.put(item)
            await all_started.wait()
            assert workers.started == 300
            release.set()
            await all_done.wait()
            assert workers.started == 5  # the idle ones kept, none more

            workers.put(300)  # handled by a kept worker, without starting one
            assert workers.started == 5
            workers.close()
        assert workers.started == 0


async def test_with_no_idle_worker_kept_each_item_gets_a_worker_that_then_ends() -> None:
    handled: list[int] = []
    done = anyio.Event()

    async def handle(item: int) -> None:
        handled.append(item)
        done.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            workers = Workers(handle, 3, tg, keep_idle=0)
            for item in range(20):
                workers.put(item)
                await done.wait()
                done = anyio.Event()
                assert workers.started == 0
            workers.close()

    assert handled == list(range(20))
