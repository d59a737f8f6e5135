"""Runs, their statuses and the leases daemons hold on them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, NewType

from sagad.domain.steps import Step

RunId = NewType("RunId", uuid.UUID)
WorkerId = NewType("WorkerId", str)
LeaseToken = NewType("LeaseToken", int)
"""The fencing token: every claim of a run increments it, so an older holder's writes are refused."""


class RunStatus(Enum):
    """Where a run is in its lifecycle: pending -> running -> completed, or -> compensating -> compensated."""

    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED})
"""The statuses a run ends in; they are also the outcomes a run is counted by."""

STATUS_NAMES: tuple[str, ...] = tuple(status.value for status in RunStatus)


@dataclass(frozen=True, slots=True)
class Lease:
    """A run a daemon holds, with the fencing token of its claim."""

    run_id: RunId
    token: LeaseToken


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run just claimed: where it stands and what it needs to go on."""

    lease: Lease
    status: RunStatus
    next_step: Step
    """The step to run next (a claimable run always has one; a compensating run's is the failed step)."""
    failed_step: Step | None
    last_error: str | None
    brief: str
    """The stored brief as JSON text: each run decodes its own, so one that cannot be read fails alone."""
    attempts: int
    outputs: Mapping[Step, Any]
    """The outputs of the steps it has committed (JSON values), for the steps after them."""
