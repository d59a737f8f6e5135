"""Keeps this daemon's leases alive: one renewal statement per tick for every run it holds."""

from __future__ import annotations

import logging
import time

import anyio

from sagad.actors.ledger import Ledger
from sagad.actors.ports import RunLeases
from sagad.domain.runs import Lease, WorkerId
from sagad.errors import TransientDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)


class Renewer:
    """Renews every held lease each tick; runs another daemon took over are dropped."""

    def __init__(
        self, *, store: RunLeases, ledger: Ledger, metrics: Metrics, worker: WorkerId, lease_seconds: float
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._worker = worker
        self._lease_seconds = lease_seconds

    def abandon(self) -> list[Lease]:
        return []  # it holds no run of its own

    async def run(self) -> None:
        # Three ticks per lease: two renewals may fail before another daemon can take a run.
        tick = self._lease_seconds / 3
        while True:
            await anyio.sleep(tick)
            try:
                await self.renew_once()
            except TransientDatabaseError as error:
                # A missed tick is not fatal: the next one comes well before the leases expire.
                log.warning("lease renewal failed: %s", error)
                self._metrics.db_errors.labels("transient").inc()

    async def renew_once(self) -> None:
        leases = self._ledger.snapshot()
        if not leases:
            return
        started = time.perf_counter()
        renewed = await self._store.renew(self._worker, leases, self._lease_seconds)
        self._metrics.lease_renewal_duration.observe(time.perf_counter() - started)
        self._metrics.lease_renewals.labels("renewed").inc(len(renewed))
        missing = [lease for lease in leases if lease.run_id not in renewed]
        if not missing:
            return
        # A run finished under this lease since the snapshot was not renewed either; it is not lost.
        taken = await self._store.taken_over(self._worker, missing)
        lost = [lease for lease in missing if lease.run_id in taken and self._ledger.holds(lease)]
        if lost:
            log.warning("lost %d leases to other daemons", len(lost))
            self._metrics.lease_renewals.labels("lost").inc(len(lost))
            self._ledger.lose(lost, "renewal")
