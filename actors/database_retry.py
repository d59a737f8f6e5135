"""Retrying database work that failed for a transient reason, with capped backoff and jitter.

    async for attempt in retry_database_errors(on_retry):
        with attempt:
            await store.commit_step(...)

Written out rather than taken from tenacity, whose iterator keeps its call state and the state its
owner in a reference cycle: every commit's cycle held its batch (through ``on_retry``'s closure)
until the collector's next full pass, some 160,000 objects a second with thousands of slow runs
in flight. Nothing here refers back to what refers to it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import TracebackType

import anyio

from sagad.errors import TransientDatabaseError

FIRST_WAIT_SECONDS = 0.02
MAX_WAIT_SECONDS = 2.0
JITTER_SECONDS = 0.1


def backoff(failed_attempts: int, jitter: float) -> float:
    """Seconds to wait after ``failed_attempts`` failures: doubling from 20 ms, at most 2 s, plus jitter."""
    doubled: float = FIRST_WAIT_SECONDS * 2.0 ** min(failed_attempts - 1, 16)  # an outage may last hours
    return min(doubled, MAX_WAIT_SECONDS) + jitter * JITTER_SECONDS


class Attempt:
    """One attempt: its block's TransientDatabaseError is kept for the next one; anything else goes through."""

    __slots__ = ("_retrying", "number")

    def __init__(self, retrying: DatabaseRetries, number: int) -> None:
        self._retrying = retrying
        self.number = number

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if isinstance(error, TransientDatabaseError):
            self._retrying.failed = error
            return True
        self._retrying.done = True
        return False


class DatabaseRetries:
    """Attempts until one's block ends without a TransientDatabaseError, waiting longer after each failure."""

    def __init__(self, on_retry: Callable[[BaseException], None]) -> None:
        self._on_retry = on_retry
        self._attempts = 0
        self.failed: TransientDatabaseError | None = None
        self.done = False

    def __aiter__(self) -> DatabaseRetries:
        return self

    async def __anext__(self) -> Attempt:
        if self.done:
            raise StopAsyncIteration
        if self._attempts:
            # Let go of the error at once: its traceback holds the frame that holds this object.
            error, self.failed = self.failed, None
            if error is None:
                raise RuntimeError("an attempt's block must be entered: `with attempt:`")
            self._on_retry(error)
            del error
            await anyio.sleep(backoff(self._attempts, random.random()))
        self._attempts += 1
        return Attempt(self, self._attempts)


def retry_database_errors(on_retry: Callable[[BaseException], None] = lambda _: None) -> DatabaseRetries:
    """Retries forever on TransientDatabaseError; anything else (and cancellation) goes through."""
    return DatabaseRetries(on_retry)
