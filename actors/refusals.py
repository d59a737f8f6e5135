"""A batch the database refuses is committed again run by run, so that one bad run fails only itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sagad.errors import PermanentDatabaseError

T = TypeVar("T")
R = TypeVar("R")

LOCKED_PAUSE_SECONDS = 0.05
"""How long runs whose rows another transaction held wait before they are tried again, when nothing
else is waiting: enough not to spin on a lock held for long."""


async def each_alone_on_refusal(
    items: Sequence[T],
    commit: Callable[[Sequence[T]], Awaitable[R]],
    refused: Callable[[T, PermanentDatabaseError], Awaitable[R]],
) -> list[R]:
    """``commit(items)``; if the database refuses it (a permanent error), ``commit([item])`` for each.

    An item the database refuses on its own comes to ``refused(item, error)``, which may commit
    something else for it or raise. Returns what each commit came to.
    """
    try:
        return [await commit(items)]
    except PermanentDatabaseError as error:
        if len(items) == 1:
            return [await refused(items[0], error)]
    parts = []
    for item in items:
        try:
            parts.append(await commit([item]))
        except PermanentDatabaseError as error:
            parts.append(await refused(item, error))
    return parts
