"""Attempts at a call, per its retry policy: each within its timeout, cancelled if the run's lease is lost.

Step calls and undos alike go through ``retry_per_policy``. The loop is written out rather than
taken from tenacity: tenacity costs some 30 µs a call even when nothing fails, instant steps are
called five times a run, and its call state holds whatever the call refers to in a reference
cycle (actors/database_retry.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from sagad.actors.ledger import Ledger
from sagad.actors.timeouts import Timeouts
from sagad.domain.pipeline import RetryPolicy
from sagad.domain.runs import Lease
from sagad.errors import StepFailed, TransientStepError

T = TypeVar("T")

REASON_LIMIT = 2000


def truncated(reason: str, limit: int = REASON_LIMIT) -> str:
    """A failure reason short enough to keep on the run, however much the input said."""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def retry_reason(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return "transient" if isinstance(error, TransientStepError) else "error"


def _describe(error: Exception, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(error) if isinstance(error, TransientStepError) else f"{type(error).__name__}: {error}"


RETRY_REASON_LIMIT = 200
"""Of each retried attempt's reason, what the run's history keeps."""
RETRY_REASONS_LIMIT = 1000
"""Of all of a call's, joined: a policy of many attempts must not make a history row unbounded."""


def retry_reasons(errors: list[Exception], timeout: float) -> str | None:
    """Why a call's attempts were retried, one short reason each, in order; None when none was."""
    if not errors:
        return None
    joined = "; ".join(truncated(_describe(error, timeout), RETRY_REASON_LIMIT) for error in errors)
    return truncated(joined, RETRY_REASONS_LIMIT)


Attempted = Callable[[str, float, Exception | None], None]
"""Told of each attempt: its outcome (ok, retried, failed), its seconds, and what it raised."""


@dataclass(slots=True)
class Tally:
    """What the attempts of one call (or undo) came to, as they are told (an ``Attempted``)."""

    attempts: int = 0
    seconds: float = 0.0
    """Their time summed, the waits between them left out."""
    retried: list[Exception] = field(default_factory=list)
    """What each attempt that was tried again raised, in order."""

    def count(self, outcome: str, seconds: float, error: Exception | None) -> None:
        self.attempts += 1
        self.seconds += seconds
        if outcome == "retried" and error is not None:
            self.retried.append(error)

    def reasons(self, timeout: float) -> str | None:
        return retry_reasons(self.retried, timeout)


class LeaseLost(Exception):
    """The run's lease passed to another daemon while its call was under way: the call was cancelled."""


async def retry_per_policy(
    policy: RetryPolicy,
    timeouts: Timeouts | None,
    attempt: Callable[[int], Awaitable[T]],
    attempted: Attempted,
    jitter: random.Random,
    *,
    ledger: Ledger,
    lease: Lease,
) -> T:
    """``attempt(n)`` for n = 1, 2, ... until one returns, one raises StepFailed, or the policy's attempts run out.

    Each attempt runs in a cancel scope of ``timeouts`` (None: it never waits, so nothing to time
    out or cancel), which the ledger cancels if the run's lease is lost (LeaseLost is raised). A
    StepFailed is raised at once; after the last attempt, its error.
    """
    for n in range(1, policy.attempts + 1):
        started = time.perf_counter()
        try:
            result = await _within(timeouts, attempt, n, ledger, lease)
        except StepFailed as failure:
            attempted("failed", time.perf_counter() - started, failure)
            raise
        except LeaseLost:
            raise
        except Exception as error:
            last = n == policy.attempts
            attempted("failed" if last else "retried", time.perf_counter() - started, error)
            if last:
                raise
            await anyio.sleep(policy.wait(n, jitter.random()))
            continue
        attempted("ok", time.perf_counter() - started, None)
        return result
    raise AssertionError("unreachable: a policy has at least one attempt")  # pragma: no cover


async def _within(
    timeouts: Timeouts | None, attempt: Callable[[int], Awaitable[T]], n: int, ledger: Ledger, lease: Lease
) -> T:
    """One attempt, in a cancel scope that its timeout or a lost lease (LeaseLost) cancels."""
    if timeouts is None:
        return await attempt(n)
    with timeouts.scope() as scope:
        if not ledger.watch(lease, scope):
            raise LeaseLost
        try:
            return await attempt(n)
        finally:
            ledger.unwatch(lease)
    if not ledger.holds(lease):
        raise LeaseLost
    raise TimeoutError


def gave_up(what: str, attempts: int, error: Exception, timeout: float, lease: Lease) -> str:
    """Why a step (or an undo) failed for good; its attempts count within the claim named (a takeover starts again)."""
    return truncated(f"{what}: gave up after {attempts} attempts (claim {lease.token}): {_describe(error, timeout)}")
