"""Calling a step for one run (its attempts per its policy, actors/attempts.py) and what the call came to."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from sagad.actors.attempts import LeaseLost, Tally, gave_up, retry_per_policy, retry_reason, truncated
from sagad.actors.ledger import Ledger
from sagad.actors.messages import StepWork
from sagad.actors.timeouts import Timeouts
from sagad.domain.pipeline import StepContext, StepResult, StepSpec
from sagad.errors import StepFailed
from sagad.metrics import RETRY_REASONS, Metrics

log = logging.getLogger(__name__)

_AVERAGE_WEIGHT = 0.02  # of the newest attempt: the average follows a service's pace over some 50 calls


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
    attempts: int = 1
    call_seconds: float = 0.0
    """The attempts' time summed (the waits between them left out)."""
    retry_reasons: str | None = None
    """Why the attempts before the last were tried again (``retry_reasons``); None when none was."""


LOST = Called(None, failure="the run's lease was lost during the call")
"""A call cancelled because another daemon took the run over."""


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
        try:  # a run whose brief Python cannot read fails alone
            brief = work.brief
        except (ValueError, RecursionError) as error:
            return Called(None, failure=truncated(f"{self._step}: invalid brief: it cannot be read: {error}"))
        spec = self._spec
        tally = Tally()

        def attempted(outcome: str, took: float, error: Exception | None) -> None:
            tally.count(outcome, took, error)
            self._attempted(outcome, took, error)

        async def attempt(n: int) -> tuple[StepResult, str]:
            # An instant call is never interrupted: no deadline to tell it (and no clock to read).
            deadline = math.inf if spec.instant else asyncio.get_running_loop().time() + spec.timeout_seconds
            result = await spec.call(StepContext(work.lease.run_id, brief, work.outputs, deadline, n))
            return result, _encoded(result, spec)

        try:
            result, output_json = await retry_per_policy(
                spec.retry,
                self._timeouts,
                attempt,
                attempted,
                self._jitter,
                ledger=self._ledger,
                lease=work.lease,
            )
        except LeaseLost:
            self._fenced.inc()
            self._ledger.lose([work.lease], "call")
            return LOST
        except StepFailed as failure:
            failed = truncated(f"{self._step}: {failure}")
            return Called(
                None,
                failure=failed,
                attempts=tally.attempts,
                call_seconds=tally.seconds,
                retry_reasons=tally.reasons(spec.timeout_seconds),
            )
        except Exception as error:
            if retry_reason(error) == "error":
                log.exception("step %s failed for run %s", self._step, work.lease.run_id)
            reason = gave_up(self._step, spec.retry.attempts, error, spec.timeout_seconds, work.lease)
            return Called(
                None,
                failure=reason,
                clean=False,
                attempts=tally.attempts,
                call_seconds=tally.seconds,
                retry_reasons=tally.reasons(spec.timeout_seconds),
            )
        # Handed on as it was encoded, not as returned: a UUID becomes its text, a tuple a list, on
        # this path as on a takeover's, which reads the committed text back.
        return Called(
            result,
            output_json,
            orjson.loads(output_json),
            attempts=tally.attempts,
            call_seconds=tally.seconds,
            retry_reasons=tally.reasons(spec.timeout_seconds),
        )

    def _attempted(self, outcome: str, seconds: float, error: Exception | None) -> None:
        self._durations[outcome].observe(seconds)
        if self.typical_seconds:
            self.typical_seconds += (seconds - self.typical_seconds) * _AVERAGE_WEIGHT
        else:
            self.typical_seconds = seconds
        if outcome == "retried" and error is not None:
            self._retries[retry_reason(error)].inc()


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
