"""Waiting on database state under a deadline; the database has no event to wait on, so it is polled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from sagad.errors import TransientDatabaseError
from sagad.store.db import Database


async def wait_until(condition: Callable[[], Awaitable[bool]], *, seconds: float, every: float = 0.05) -> None:
    """Return once ``condition()`` holds; TimeoutError after ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            if await condition():
                return
            await anyio.sleep(every)


async def count_when_reachable(db: Database, query: str, *args: Any, seconds: float = 30) -> int:
    """The first column of the first row of ``query``, once the database answers (it may be restarting)."""
    with anyio.fail_after(seconds):
        while True:
            try:
                return int((await db.fetch(query, *args))[0][0])
            except TransientDatabaseError:
                await anyio.sleep(0.1)


async def wait_count(db: Database, query: str, at_least: int, *args: Any, seconds: float = 60) -> None:
    """Wait until ``query`` counts at least ``at_least``, riding out outages."""

    async def enough() -> bool:
        return await count_when_reachable(db, query, *args, seconds=seconds) >= at_least

    await wait_until(enough, seconds=seconds)
