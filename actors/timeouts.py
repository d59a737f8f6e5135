"""The timeouts of one step's calls, kept by a single timer instead of a timer each.

A cancel scope with a deadline costs a timer: created, pushed onto the event loop's heap (each
comparison a Python call), cancelled when the call ends, and left on the heap until the loop sweeps
it. With thousands of calls in flight and timeouts of a minute, the heap holds hundreds of thousands
of dead timers, and every call pays for them. A step's calls share one timeout, so their deadlines
come in the order the calls start: the open scopes, in that order, and one timer for the oldest
suffice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class Timeouts:
    """Cancel scopes cancelled ``seconds`` after they are opened, unless closed before."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._open: dict[anyio.CancelScope, float] = {}
        """Open scopes and their deadlines, oldest first (a dict keeps insertion order)."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that this object cancels once its time is up."""
        scope = anyio.CancelScope()
        deadline = anyio.current_time() + self.seconds
        self._open[scope] = deadline
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop:
            # The loop's own timer, as anyio's deadlines use: anyio.current_time() is the loop's clock.
            self._loop = loop
            self._timer = loop.call_at(deadline, self._expire)
        try:
            with scope:
                yield scope
        finally:
            self._open.pop(scope, None)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = []
        for scope, deadline in self._open.items():
            if deadline > now:
                break
            expired.append(scope)
        for scope in expired:
            del self._open[scope]
            scope.cancel()
        oldest = next(iter(self._open.values()), None)
        self._timer = None if oldest is None else loop.call_at(oldest, self._expire)
