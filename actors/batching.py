"""Group commit: take what is already waiting in an inbox, up to a limit."""

from __future__ import annotations

from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")


def take_available(inbox: MemoryObjectReceiveStream[T], limit: int) -> list[T]:
    """Whatever the inbox holds right now, ``limit`` items at most; never waits."""
    batch: list[T] = []
    while len(batch) < limit:
        try:
            batch.append(inbox.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


def take_waiting(first: T, inbox: MemoryObjectReceiveStream[T], limit: int) -> list[T]:
    """``first`` and whatever else the inbox holds right now, ``limit`` items at most."""
    return [first, *take_available(inbox, limit - 1)]
