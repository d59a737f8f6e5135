"""Keeps this daemon's leases alive: each tick, a renewal statement per thousand runs it holds."""

from __future__ import annotations

import logging
import time

import anyio

from sagad.actors.ledger import Ledger
from sagad.actors.ports import RunLeases
from sagad.domain.runs import Lease, WorkerId
from sagad.errors import DatabaseUnreachable, TransientDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)


RENEWAL_CHUNK = 1000
"""Leases renewed by one statement: thousands in one would outlast the renewal's time limit (a sixth of
a lease) on a busy server, and every lease would go unrenewed; each chunk has the limit to itself."""


class Renewer:
    """Renews every held lease each tick; runs another daemon took over are dropped and counted lost.

    Rows locked by others are skipped, not waited for: a run stuck behind a lock is not renewed this
    tick, and every other lease is.
    """

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
        # A renewal starts every third of a lease, however long the last one took: a daemon that stops
        # answering renewed its leases at most L/3 before, so they end no sooner than 2L/3 after it
        # stopped, when the server has ended whatever it held (store/limits.py). A failed renewal
        # (its deadline is L/6) is tried again soon, not a whole tick later.
        tick = self._lease_seconds / 3
        next_start = anyio.current_time() + tick
        while True:
            await anyio.sleep(max(0.0, next_start - anyio.current_time()))
            started = anyio.current_time()
            try:
                await self.renew_once()
            except TransientDatabaseError as error:
                level = logging.DEBUG if isinstance(error, DatabaseUnreachable) else logging.WARNING
                log.log(level, "lease renewal failed: %s", error)
                self._metrics.db_errors.labels("transient").inc()
                next_start = anyio.current_time() + tick / 8
            else:
                next_start = started + tick

    async def renew_once(self) -> None:
        """Renew every held lease, a chunk a statement; the first error, once every chunk was tried."""
        leases = self._ledger.snapshot()
        failure: TransientDatabaseError | None = None
        for start in range(0, len(leases), RENEWAL_CHUNK):
            try:
                await self._renew(leases[start : start + RENEWAL_CHUNK])
            except TransientDatabaseError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    async def _renew(self, leases: list[Lease]) -> None:
        started = time.perf_counter()
        renewal = await self._store.renew(self._worker, leases, self._lease_seconds)
        renewed = renewal.renewed
        self._metrics.lease_renewal_duration.observe(time.perf_counter() - started)
        self._metrics.lease_renewals.labels("renewed").inc(len(renewed))
        if renewal.cancelled:
            # Given back as compensating by the renewal itself: dropping them cancels their calls in
            # flight, and the next claim (this daemon's or another's) sends them backward.
            cancelled = [lease for lease in leases if lease.run_id in renewal.cancelled]
            log.info("%d runs cancelled by an operator: sending them backward", len(cancelled))
            self._metrics.cancels_taken.inc(len(cancelled))
            self._ledger.drop(cancelled)
        missing = [lease for lease in leases if lease.run_id not in renewed and lease.run_id not in renewal.cancelled]
        if not missing:
            return
        # A run finished under this lease since the snapshot was not renewed either; it is not lost.
        taken = await self._store.taken_over(self._worker, missing)
        lost = [lease for lease in missing if lease.run_id in taken and self._ledger.holds(lease)]
        if lost:
            log.warning("lost %d leases to other daemons", len(lost))
            self._metrics.lease_renewals.labels("lost").inc(len(lost))
            self._ledger.lose(lost, "renewal")
