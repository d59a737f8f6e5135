"""The step contract, and the pipeline declared once as step specs.

A step is an async callable: it gets a ``StepContext`` and returns a ``StepResult`` (the rows it
writes into its own tables and an output for later steps), or raises ``sagad.errors.StepFailed``
(the run is compensated, the reason kept on it) or ``sagad.errors.TransientStepError`` (retried
with capped exponential backoff and jitter; after the last attempt, a permanent failure). Any
other exception is retried the same way: a step that keeps raising it ends as a failure too.

No connection, transaction or lock is held while a step's call runs. The call runs inside a
cancel scope: it is cancelled when its timeout passes or when the run's lease is lost.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sagad.domain.rows import Rows, row_key
from sagad.domain.runs import RunId
from sagad.domain.steps import Step

JSON = Any
"""A value ``json.dumps`` accepts: outputs are persisted as JSON and read back as JSON."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step's call gets."""

    run_id: RunId
    brief: JSON
    """The normalized brief (the first step's output); the first step gets the brief as submitted."""
    outputs: Mapping[Step, JSON]
    """The outputs of the earlier steps, as committed."""
    deadline: float
    """When the call is cancelled unless it has returned (``anyio.current_time()`` clock); infinite for an
    instant step, which is never interrupted."""
    attempt: int = 1
    """1 for the first call of this step for this run in this claim, then 2, 3, ...; a run taken over by
    another daemon (a new claim) starts again at 1, so a call may be made up to the retry policy's attempts
    times per claim, and a run is claimed at most ``--max-attempts`` times."""

    def key(self, entity: str) -> uuid.UUID:
        """The key of ``entity`` (e.g. ``"asset/email/headline"``) in this run: the same on every retry."""
        return row_key(self.run_id, entity)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a step's call returns: its rows, by table (only the step's own tables), and its output."""

    rows: Rows = field(default_factory=dict)
    output: JSON = None


@dataclass(frozen=True, slots=True)
class UndoContext:
    """What an undo gets: the run, and the output of the step it undoes (None if that step failed)."""

    run_id: RunId
    brief: JSON
    output: JSON
    reason: str
    """Why the run is compensated."""
    deadline: float

    def key(self, entity: str) -> uuid.UUID:
        """The key the step's call gave ``entity`` in this run (``StepContext.key``): to find what it made."""
        return row_key(self.run_id, entity)


def brief_after(submitted: JSON, outputs: Mapping[Step, JSON]) -> JSON:
    """The brief a step gets, given the outputs of the steps a run has passed.

    Once the first step has run, its output (the normalized brief); before, the brief as submitted,
    decoded when it is the JSON text the database keeps. Raises ValueError (or RecursionError) for
    text Python cannot read: the first step's call then fails its run alone.
    """
    normalized = outputs.get(_FIRST_STEP, _NOT_YET)
    if normalized is not _NOT_YET:
        return normalized
    return json.loads(submitted) if isinstance(submitted, str) else submitted


_FIRST_STEP = Step.NORMALIZE_BRIEF
_NOT_YET = object()

StepCall = Callable[[StepContext], Awaitable[StepResult]]
Undo = Callable[[UndoContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, for a limited number of attempts."""

    attempts: int = 5
    first_wait_seconds: float = 0.1
    max_wait_seconds: float = 10.0
    jitter_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, not {self.attempts}")
        if not 0 <= self.first_wait_seconds <= self.max_wait_seconds:
            raise ValueError("a retry policy needs 0 <= first_wait_seconds <= max_wait_seconds")
        if self.jitter_seconds < 0:
            raise ValueError("a retry policy's jitter cannot be negative")

    def wait(self, failed_attempts: int, jitter: float) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure; ``jitter`` is uniform in [0, 1)."""
        backoff = self.first_wait_seconds * 2.0 ** (failed_attempts - 1)
        return min(self.max_wait_seconds, backoff) + jitter * self.jitter_seconds


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a pipeline: what to call, how long to wait, how often to retry, how many at once."""

    step: Step
    call: StepCall
    undo: Undo | None = None
    """Takes back what the call did outside the database; run in reverse step order before the DELETEs."""
    timeout_seconds: float = 60.0
    retry: RetryPolicy = RetryPolicy()
    concurrency: int = 1000
    """Calls of this step in flight at once in one daemon."""
    instant: bool = False
    """The call never waits on anything: the actor awaits it inline instead of in a task of its own."""

    def __post_init__(self) -> None:
        where = f"step {self.step.value}"
        if not _is_async(self.call):
            raise TypeError(f"{where}: its call must be an async function, not {self.call!r}")
        if self.undo is not None and not _is_async(self.undo):
            raise TypeError(f"{where}: its undo must be an async function, not {self.undo!r}")
        if not self.timeout_seconds > 0:
            raise ValueError(f"{where}: timeout_seconds must be > 0, not {self.timeout_seconds}")
        if self.concurrency < 1:
            raise ValueError(f"{where}: concurrency must be >= 1, not {self.concurrency}")

    @property
    def tables(self) -> tuple[str, ...]:
        return self.step.tables


def _is_async(function: object) -> bool:
    """An async function, or an object whose ``__call__`` is one."""
    call = getattr(type(function), "__call__", None)  # noqa: B004  (the method, to inspect, not a test of callability)
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


Lifespan = Callable[[], AbstractAsyncContextManager[None]]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The five steps, one spec each, in pipeline order."""

    steps: tuple[StepSpec, ...]
    lifespan: Lifespan | None = None
    """Resources the steps share (an HTTP client, say): entered when a daemon starts, left when it stops."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple) or not all(isinstance(spec, StepSpec) for spec in self.steps):
            raise TypeError("a pipeline's steps must be a tuple of StepSpec")
        declared = tuple(spec.step for spec in self.steps)
        if declared != tuple(Step):
            expected = ", ".join(step.value for step in Step)
            got = ", ".join(step.value for step in declared) or "none"
            raise ValueError(f"a pipeline declares the steps {expected}, in that order; this one declares {got}")

    def spec(self, step: Step) -> StepSpec:
        return self.steps[step.index]
