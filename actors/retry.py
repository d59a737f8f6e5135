"""Retrying database work that failed for a transient reason, with capped backoff and jitter."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from sagad.errors import TransientDatabaseError


def retrying(on_retry: Callable[[BaseException], None] = lambda _: None) -> AsyncRetrying:
    """Retries forever on TransientDatabaseError; anything else (and cancellation) goes through."""

    def before_sleep(state: RetryCallState) -> None:
        # tenacity sleeps only after an attempt that raised: there is always an outcome with an error.
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None:
            on_retry(error)

    return AsyncRetrying(
        retry=retry_if_exception_type(TransientDatabaseError),
        wait=wait_exponential_jitter(multiplier=0.02, max=2.0, jitter=0.1),
        sleep=anyio.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
