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
from types import TracebackType

import anyio


class Timeouts:
    """Cancel scopes cancelled ``seconds`` after they are opened, unless closed before."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._open: dict[anyio.CancelScope, float] = {}
        """Open scopes and their deadlines, oldest first (a dict keeps insertion order)."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def scope(self) -> _Scope:
        """A cancel scope that this object cancels once its time is up (``with timeouts.scope() as scope``)."""
        return _Scope(self)

    def _open_scope(self, scope: anyio.CancelScope) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds  # anyio's clock on asyncio is the loop's
        self._open[scope] = deadline
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_at(deadline, self._expire)

    def _close_scope(self, scope: anyio.CancelScope) -> None:
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


class _Scope:
    """A context manager, not a generator: it is opened for every call of a slow step."""

    __slots__ = ("_cancel_scope", "_timeouts")

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._cancel_scope = anyio.CancelScope()

    def __enter__(self) -> anyio.CancelScope:
        self._timeouts._open_scope(self._cancel_scope)
        return self._cancel_scope.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        self._timeouts._close_scope(self._cancel_scope)
        return self._cancel_scope.__exit__(kind, error, traceback)
