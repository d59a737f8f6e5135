"""The leases one daemon holds, and the room it has for more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import anyio

from sagad.domain.runs import Lease, RunId, RunStatus
from sagad.metrics import Metrics

LeaseLossFinder = Literal["renewal", "call", "step", "compensation", "undo"]
"""What found a lease lost: a renewal that no longer matched, a call or undo whose lease went, or a step or
compensation write fenced off (metrics.LOST_LEASE_FINDERS)."""


class Ledger:
    """Runs in flight in this daemon; every run enters by ``hold`` and leaves exactly once.

    A call working for a run is ``watch``ed: when the run leaves the ledger (its lease was lost,
    say), the call is cancelled, since whatever it returns would be fenced anyway.
    """

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity = capacity
        self._held: dict[RunId, Lease] = {}
        self._calls: dict[RunId, anyio.CancelScope] = {}
        self._metrics = metrics
        self._changed = anyio.Event()
        metrics.leases_held.set_function(lambda: len(self._held))

    def __len__(self) -> int:
        return len(self._held)

    def room(self) -> int:
        return max(0, self.capacity - len(self._held))

    def holds(self, lease: Lease) -> bool:
        return self._held.get(lease.run_id) == lease

    def snapshot(self) -> list[Lease]:
        return list(self._held.values())

    def hold(self, lease: Lease) -> None:
        self._held[lease.run_id] = lease

    def watch(self, lease: Lease, scope: anyio.CancelScope) -> bool:
        """Cancel ``scope`` when the run leaves the ledger; False (and cancelled) if it already has."""
        if not self.holds(lease):
            scope.cancel()
            return False
        self._calls[lease.run_id] = scope
        return True

    def unwatch(self, lease: Lease) -> None:
        self._calls.pop(lease.run_id, None)

    def finish(self, lease: Lease, outcome: RunStatus, age_seconds: float) -> None:
        """The run reached a terminal state (``outcome``) under this lease."""
        self._metrics.runs.labels(outcome.value).inc()
        self._metrics.run_duration.labels(outcome.value).observe(age_seconds)
        self.drop([lease])

    def lose(self, leases: Iterable[Lease], found_by: LeaseLossFinder) -> None:
        """Forget runs another daemon took over; each one still held counts once as a lost lease.

        Whatever finds a loss first calls this (the renewer, a fenced step or compensation write),
        so every lost lease is counted, and none twice.
        """
        lost = [lease for lease in leases if self.holds(lease)]
        if lost:
            self._metrics.leases_lost.labels(found_by).inc(len(lost))
            self.drop(lost)

    def drop(self, leases: Iterable[Lease]) -> None:
        """Forget runs this daemon no longer works on (finished, lost or given back)."""
        for lease in leases:
            if self.holds(lease):
                del self._held[lease.run_id]
                call = self._calls.pop(lease.run_id, None)
                if call is not None:
                    call.cancel()
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for_room(self, at_least: int = 1) -> None:
        """Until ``at_least`` more runs may be held (never more than the whole capacity)."""
        while self.room() < min(at_least, self.capacity):
            await self._changed.wait()

    async def wait_until_empty(self) -> None:
        while self._held:
            await self._changed.wait()
