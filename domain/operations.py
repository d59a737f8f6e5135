"""What an operator and a client see of runs: a run's view, filters, pages, cancels, retries and intake."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sagad.domain.runs import RunId, RunStatus
from sagad.domain.steps import Step

CANCEL_PREFIX = "cancelled: "
"""How a cancelled run's ``last_error`` starts: the reason the operator gave follows."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run as ``sagad runs show`` and ``Client.get`` return it."""

    run_id: RunId
    status: RunStatus
    current_step: str | None
    failed_step: str | None
    attempts: int
    last_error: str | None
    compensation_error: str | None
    """Why a compensation has not finished yet (an undo kept failing)."""
    claimed_by: str | None
    lease_token: int
    idempotency_key: str | None
    submitted_at: datetime
    started_at: datetime | None
    failed_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    retry_of: RunId | None
    """The compensated run this one retries."""
    retried_by: RunId | None
    """The run that retries this one, once it has been retried."""
    cancel_requested_at: datetime | None
    cancel_reason: str | None
    cancelled_by: str | None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids as strings, times in ISO 8601."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, RunStatus):
                value = value.value
            elif value is not None and name in ("run_id", "retry_of", "retried_by"):
                value = str(value)
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs ``list`` returns; every field left at its default matches every run."""

    statuses: frozenset[RunStatus] = frozenset()
    step: Step | None = None
    """Runs at this step (pending or running there), or that failed there."""
    since: datetime | None = None
    """Submitted at or after."""
    until: datetime | None = None
    """Submitted before."""
    error_contains: str | None = None
    """Text in the last error (case-insensitive)."""
    waiting_on_undo: bool = False
    """Compensating runs held up by an undo that kept failing."""
    cancelled: bool = False
    """Runs whose cancel was requested."""


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs, newest first, and the cursor of the next page (None on the last)."""

    runs: tuple[Run, ...]
    next_cursor: str | None


class CancelOutcome(Enum):
    """What a cancel did to one run."""

    COMPENSATED = "compensated"
    """It was pending and never claimed: compensated at once (it had done nothing)."""
    REQUESTED = "requested"
    """It was in flight: the daemon holding it (or the next to claim it) compensates it."""
    ALREADY_REQUESTED = "already requested"
    """A cancel was already requested; it stands."""
    ALREADY_COMPENSATING = "already compensating"
    ALREADY_COMPENSATED = "already compensated"
    REFUSED_COMPLETED = "refused: completed"
    """A completed run is never cancelled."""

    @property
    def accepted(self) -> bool:
        return self in (CancelOutcome.COMPENSATED, CancelOutcome.REQUESTED, CancelOutcome.ALREADY_REQUESTED)


@dataclass(frozen=True, slots=True)
class CancelResult:
    run_id: RunId
    outcome: CancelOutcome


class RetryOutcome(Enum):
    """What a retry did to one run."""

    CREATED = "created"
    ALREADY_RETRIED = "already retried"
    """The run had been retried before: the same new run is returned."""
    REFUSED_NOT_COMPENSATED = "refused: not compensated"


@dataclass(frozen=True, slots=True)
class RetryResult:
    run_id: RunId
    outcome: RetryOutcome
    new_run: RunId | None


@dataclass(frozen=True, slots=True)
class IntakeState:
    """Whether the fleet claims new runs; paused, daemons finish what they hold and submissions wait."""

    paused: bool
    changed_at: datetime | None = None
    changed_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One thing that happened to a run: claimed, committed (a step), call failed, failed, undo held up,
    undo, deleted, cancel requested, completed, compensated, or retry (this run retries ``detail``)."""

    at: datetime
    event: str
    step: str | None
    worker: str | None
    """The daemon: of a claim or a step's commit (its claim's), of a failure, of a cancel (who asked)."""
    token: int | None
    """The lease token it happened under (a claim's, a step's commit)."""
    attempt: int | None
    """A claim's number; for a step's commit, a failed call or an undo, how many attempts its call took."""
    detail: str | None
    """Why (a failure, a cancel, an undo held up); an undo's outcome (undone, no undo); a retried run's id."""
    call_ms: float | None = None
    """A step's call or an undo: its attempts' time summed, in milliseconds."""
    retry_reasons: str | None = None
    """Why the call's attempts before the last were tried again, in order ("; " between them)."""
    rows: dict[str, int] | None = None
    """A 'deleted' event: the rows the compensation deleted per table of the run (tables with none left out)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "event": self.event,
            "step": self.step,
            "worker": self.worker,
            "token": self.token,
            "attempt": self.attempt,
            "detail": self.detail,
            "call_ms": self.call_ms,
            "retry_reasons": self.retry_reasons,
            "rows": self.rows,
        }
