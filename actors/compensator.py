"""The end of the backward path: deletes failed runs' rows, many runs in one statement."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from sagad.actors.batching import take_available, take_waiting
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation
from sagad.actors.ports import Compensations
from sagad.domain.rows import Committed
from sagad.domain.runs import Lease, RunStatus
from sagad.errors import PermanentDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)

# How long runs whose row another transaction held wait before they are tried again.
_LOCKED_PAUSE_SECONDS = 0.05


class Compensator:
    """Executes compensations; a failing one is retried until it is done or the lease is lost."""

    def __init__(self, *, store: Compensations, ledger: Ledger, metrics: Metrics, batch_limit: int) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._batch_limit = batch_limit
        self._holding: list[Compensation] = []

    def abandon(self) -> list[Lease]:
        leases = [message.lease for message in self._holding]
        self._holding = []
        return leases

    async def run(self, inbox: MemoryObjectReceiveStream[Compensation]) -> None:
        again: list[Compensation] = []  # runs whose row another transaction held last time
        ended = False
        while True:
            if again:
                # Tried again after a pause, with whatever arrives meanwhile (up to the batch limit).
                batch = again
                with anyio.move_on_after(_LOCKED_PAUSE_SECONDS):
                    while len(batch) < self._batch_limit and not ended:
                        try:
                            batch.append(await inbox.receive())
                        except anyio.EndOfStream:
                            ended = True
                batch += take_available(inbox, self._batch_limit - len(batch))
            elif ended:
                return
            else:
                try:
                    first = await inbox.receive()
                except anyio.EndOfStream:
                    return
                batch = take_waiting(first, inbox, self._batch_limit)
            self._holding = batch
            again = await self._compensate(batch)
            self._holding = again

    async def _compensate(self, batch: Sequence[Compensation]) -> list[Compensation]:
        """Compensate the batch; returns the runs to try again (their rows were held by another transaction)."""
        tables = frozenset().union(*(message.tables for message in batch))

        def on_retry(error: BaseException) -> None:
            log.warning("compensation of %d runs failed, retrying: %s", len(batch), error)
            self._metrics.db_errors.labels("transient").inc()
            self._metrics.compensation_failures.inc()

        started = time.perf_counter()
        try:
            async for attempt in retry_database_errors(on_retry):
                with attempt:
                    committed = await self._store.compensate([m.lease for m in batch], tables)
        except PermanentDatabaseError:
            self._metrics.db_errors.labels("permanent").inc()
            self._metrics.compensation_failures.inc()
            if len(batch) == 1:
                raise  # the supervisor frees the run; the next claim compensates it again
            return await self._compensate_one_by_one(batch)
        self._metrics.compensation_duration.observe(time.perf_counter() - started)
        return self._record(batch, committed)

    async def _compensate_one_by_one(self, batch: Sequence[Compensation]) -> list[Compensation]:
        """Each run on its own; the runs the database refuses are given back (by the supervisor) after the others."""
        again: list[Compensation] = []
        refused: list[Compensation] = []
        error: PermanentDatabaseError | None = None
        for message in batch:
            try:
                again += await self._compensate([message])
            except PermanentDatabaseError as refusal:
                refused.append(message)
                error = refusal
        if error is not None:
            # The supervisor gives back what the actor holds: the refused runs, and the skipped ones,
            # which would otherwise stay in the ledger, renewed and never compensated.
            self._holding = [*refused, *again]
            raise error
        return again

    def _record(self, batch: Sequence[Compensation], committed: Committed) -> list[Compensation]:
        for table, count in committed.rows.items():
            self._metrics.compensated_rows.labels(table).inc(count)
        again = []
        for message in batch:
            lease = message.lease
            if lease.run_id in committed.owned:
                self._ledger.finish(lease, RunStatus.COMPENSATED, committed.owned[lease.run_id])
            elif lease.run_id in committed.skipped:
                again.append(message)
            else:
                self._metrics.fenced.labels("compensation").inc()
                self._ledger.lose([lease], "compensation")
        return again
