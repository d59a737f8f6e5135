"""Group commit: take what is already waiting in an inbox, up to a limit; send a batch without giving way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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


async def send_all(outbox: MemoryObjectSendStream[T], items: Iterable[T]) -> None:
    """Send every item, waiting only when the outbox is full.

    ``send`` gives way to the receiver after each item; sending a batch without giving way lets
    the receiver take the batch whole, and commit it as one.
    """
    for item in items:
        try:
            outbox.send_nowait(item)
        except anyio.WouldBlock:
            await outbox.send(item)
