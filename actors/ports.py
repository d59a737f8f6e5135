"""What actors need from the store and the outside world, as small protocols."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from sagad.domain.rows import Committed, StepWrite, Undone
from sagad.domain.runs import ClaimedRun, Lease, Renewal, RunId, StatusSample, WorkerId
from sagad.domain.steps import Step


class StepWriter(Protocol):
    async def commit_step(self, step: Step, writes: Sequence[StepWrite]) -> Committed: ...


class Compensations(Protocol):
    async def compensate(
        self, leases: Sequence[Lease], tables: frozenset[str], undone: Sequence[tuple[RunId, Undone]] = ()
    ) -> Committed: ...


class CompensationDeferrals(Protocol):
    async def defer_compensations(self, errors: Sequence[tuple[Lease, str]], retry_seconds: float) -> set[RunId]:
        """Give compensating runs back with the reason they are held up, to be tried again later."""


class RunLeases(Protocol):
    async def claim(self, worker: WorkerId, limit: int, lease_seconds: float) -> list[ClaimedRun]: ...

    async def unanswered_claims(self, worker: WorkerId, known: Sequence[RunId]) -> list[ClaimedRun]: ...

    async def renew(self, worker: WorkerId, leases: Sequence[Lease], lease_seconds: float) -> Renewal: ...

    async def release(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]: ...

    async def taken_over(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]: ...

    async def sample_statuses(self) -> StatusSample: ...

    async def count_overdue(self, grace_seconds: float = 0.0) -> int: ...


class DeadWorkers(Protocol):
    async def free_runs_of_dead(
        self, me: WorkerId, suspects: Collection[WorkerId], stalled_seconds: float
    ) -> tuple[dict[WorkerId, int], int]:
        """Other workers holding live leases without their worker lock, with the runs freed for ``suspects``;
        and the sessions ended for stalling on their client mid-statement in a transaction."""
        ...


class Plans(Protocol):
    def refresh_plans(self) -> None:
        """Re-plan prepared statements: the tables they were planned for have grown."""


class Wakeup(Protocol):
    async def wait(self, seconds: float) -> None:
        """Return when new runs were submitted, or after ``seconds``."""


class FaultPoints(Protocol):
    """Places where a chaos test can make the daemon fail on purpose."""

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None: ...


class NoFaults:
    """The production fault points: none."""

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None:
        return None


class Readiness(Protocol):
    """Where the daemon reports whether it takes work (what a readiness probe answers)."""

    def claim_succeeded(self) -> None: ...

    def claim_failed(self) -> None: ...

    def draining(self) -> None: ...


class Unobserved:
    """Readiness that nobody asks about: a daemon without an endpoint (the demo, tests)."""

    def claim_succeeded(self) -> None:
        return None

    def claim_failed(self) -> None:
        return None

    def draining(self) -> None:
        return None
