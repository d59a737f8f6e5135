"""Runs, their statuses and the leases daemons hold on them."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, NewType

from sagad.domain.steps import Step

RunId = NewType("RunId", uuid.UUID)


def new_run_id() -> RunId:
    """A new run's id, ordered by time (UUIDv7: the Unix time in milliseconds, then 74 random bits).

    Every index of every business table leads with ``run_id``: with ids that grow with time, a new
    run's rows land at the right-hand end of each index, on pages already in memory, instead of on a
    random page of an index that outgrew the cache long ago.
    """
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = random_bits >> 62 & _RAND_A, random_bits & _RAND_B
    return RunId(uuid.UUID(int=(millis & _MILLIS) << 80 | _VERSION_7 | rand_a << 64 | _VARIANT | rand_b))


_MILLIS = (1 << 48) - 1
_VERSION_7 = 0x7 << 76
_RAND_A = (1 << 12) - 1
_VARIANT = 0b10 << 62
_RAND_B = (1 << 62) - 1
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
    retry_of: RunId | None = None
    """The compensated run this one retries (``sagad runs retry``)."""

    @property
    def starts_a_retry(self) -> bool:
        """A retry of a compensated run, claimed for the first time."""
        return self.retry_of is not None and self.attempts == 1


@dataclass(frozen=True, slots=True)
class StatusSample:
    """Runs in the database by status, as a sampler sees them without reading the whole table."""

    in_flight: Mapping[RunStatus, int]
    """Pending, running and compensating runs: counted exactly (the backlog)."""
    finished: Mapping[RunStatus, int]
    """Completed and compensated runs: estimated from the server's statistics."""
    total: int
    """All runs: estimated from the server's statistics."""
    intake_paused: bool = False
    """Whether the fleet's intake is paused (``sagad intake pause``)."""
    cancels_waiting: int = 0
    """Unfinished runs whose cancel was asked for: their daemon (or the next claim) has yet to act."""
    oldest_cancel_seconds: float = 0.0
    """How long the oldest of those has waited."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """What one renewal did: leases extended, and runs given back because their cancel was asked for."""

    renewed: frozenset[RunId]
    cancelled: frozenset[RunId]
