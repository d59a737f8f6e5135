"""Calling a step for one run: its timeout, its retries with backoff, and what the call came to.

The retry loop is written out rather than taken from tenacity: tenacity costs some 30 µs a call
even when nothing fails, instant steps are called five times a run, and its call state holds
whatever the call refers to in a reference cycle (actors/retry.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson

from sagad.actors.ledger import Ledger
from sagad.actors.messages import StepWork
from sagad.actors.timeouts import Timeouts
from sagad.domain.pipeline import RetryPolicy, StepContext, StepResult, StepSpec
from sagad.domain.runs import Lease
from sagad.domain.steps import Step
from sagad.errors import StepFailed, TransientStepError
from sagad.metrics import RETRY_REASONS, Metrics

T = TypeVar("T")

log = logging.getLogger(__name__)

REASON_LIMIT = 2000
_FIRST_STEP = Step.NORMALIZE_BRIEF  # naming an Enum member is a descriptor lookup: once, here
_AVERAGE_WEIGHT = 0.02  # of the newest attempt: the average follows a service's pace over some 50 calls


def bounded(reason: str, limit: int = REASON_LIMIT) -> str:
    """A failure reason short enough to keep on the run, however much the input said."""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Called:
    """What a step's call came to for one run: its result and output, or why it failed for good."""

    result: StepResult | None
    output_json: str = "null"
    """The result's output, encoded once: it is committed as is."""
    output: Any = None
    """``output_json`` decoded: what later steps get, in memory or read back after a takeover alike."""
    failure: str | None = None
    clean: bool = True
    """False when an attempt may have had an effect before it failed (a timeout, a transient error)."""


LOST = Called(None, failure="the run's lease was lost during the call")
"""A call cancelled because another daemon took the run over."""


def _retry_reason(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return "transient" if isinstance(error, TransientStepError) else "error"


def _describe(error: Exception, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(error) if isinstance(error, TransientStepError) else f"{type(error).__name__}: {error}"


Attempted = Callable[[str, float, Exception | None], None]
"""Told of each attempt: its outcome (ok, retried, failed), its seconds, and what it raised."""


class LeaseLost(Exception):
    """The run's lease passed to another daemon while its call was under way: the call was cancelled."""


async def retried(
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
    return bounded(f"{what}: gave up after {attempts} attempts (claim {lease.token}): {_describe(error, timeout)}")


class StepCaller:
    """Calls one step, within its timeout, retrying as its policy says; a lost lease cancels the call."""

    def __init__(self, spec: StepSpec, ledger: Ledger, metrics: Metrics) -> None:
        self._spec = spec
        self._ledger = ledger
        self._step = spec.step.value
        self._durations = {o: metrics.step_call_duration.labels(self._step, o) for o in ("ok", "failed", "retried")}
        self._retries = {reason: metrics.step_retries.labels(self._step, reason) for reason in RETRY_REASONS}
        self._fenced = metrics.fenced.labels("call")
        self._jitter = random.Random()
        self._timeouts = None if spec.instant else Timeouts(spec.timeout_seconds)
        self.typical_seconds = 0.0
        """How long an attempt takes, as a moving average (the first attempt's time until then)."""

    async def call(self, work: StepWork) -> Called:
        """Call the step for ``work``'s run until it succeeds, fails for good, or the lease is lost."""
        brief = work.brief
        if _FIRST_STEP not in work.outputs and isinstance(brief, str):
            try:  # the brief as stored: a run whose brief Python cannot read fails alone
                brief = json.loads(brief)
            except (ValueError, RecursionError) as error:
                return Called(None, failure=bounded(f"{self._step}: invalid brief: it cannot be read: {error}"))
        spec = self._spec

        async def attempt(n: int) -> tuple[StepResult, str]:
            # An instant call is never interrupted: no deadline to tell it (and no clock to read).
            deadline = math.inf if spec.instant else asyncio.get_running_loop().time() + spec.timeout_seconds
            result = await spec.call(StepContext(work.lease.run_id, brief, work.outputs, deadline, n))
            return result, _encoded(result, spec)

        try:
            result, output_json = await retried(
                spec.retry,
                self._timeouts,
                attempt,
                self._attempted,
                self._jitter,
                ledger=self._ledger,
                lease=work.lease,
            )
        except LeaseLost:
            self._fenced.inc()
            self._ledger.lose([work.lease], "call")
            return LOST
        except StepFailed as failure:
            return Called(None, failure=bounded(f"{self._step}: {failure}"))
        except Exception as error:
            if _retry_reason(error) == "error":
                log.exception("step %s failed for run %s", self._step, work.lease.run_id)
            reason = gave_up(self._step, spec.retry.attempts, error, spec.timeout_seconds, work.lease)
            return Called(None, failure=reason, clean=False)
        # Handed on as it was encoded, not as returned: a UUID becomes its text, a tuple a list, on
        # this path as on a takeover's, which reads the committed text back.
        return Called(result, output_json, orjson.loads(output_json))

    def _attempted(self, outcome: str, seconds: float, error: Exception | None) -> None:
        self._durations[outcome].observe(seconds)
        if self.typical_seconds:
            self.typical_seconds += (seconds - self.typical_seconds) * _AVERAGE_WEIGHT
        else:
            self.typical_seconds = seconds
        if outcome == "retried" and error is not None:
            self._retries[_retry_reason(error)].inc()


def _encoded(result: object, spec: StepSpec) -> str:
    """The result's output as JSON, once the result is checked: a StepResult writing only the step's tables."""
    if not isinstance(result, StepResult):
        raise TypeError(f"step {spec.step.value} returned {type(result).__name__}, not a StepResult")
    foreign = result.rows.keys() - spec.tables
    if foreign:
        raise TypeError(f"step {spec.step.value} returned rows for {sorted(foreign)}, which it does not own")
    try:
        return orjson.dumps(result.output).decode()
    except orjson.JSONEncodeError as error:
        raise TypeError(f"step {spec.step.value} returned an output that is not JSON: {error}") from None
