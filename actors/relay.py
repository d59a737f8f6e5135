"""The backward half of a step actor: failures pass through it on their way to the compensator."""

from __future__ import annotations

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.messages import Compensation, HasLease


class FailureRelay:
    """Adds its step's tables to each failure and passes it one step back.

    It runs in a task of its own and never waits on forward traffic, so the backward path
    always drains, however full the forward inboxes are.
    """

    def __init__(self, tables: frozenset[str]) -> None:
        self.tables = tables
        self.in_hand: tuple[HasLease, ...] = ()

    async def run(
        self,
        inbox: MemoryObjectReceiveStream[Compensation],
        previous: MemoryObjectSendStream[Compensation],
    ) -> None:
        async for message in inbox:
            self.in_hand = (message,)
            await previous.send(message.including(self.tables))
            self.in_hand = ()
