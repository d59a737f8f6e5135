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
from sagad.actors.refusals import LOCKED_PAUSE_SECONDS, each_alone_on_refusal
from sagad.domain.rows import Committed
from sagad.domain.runs import Lease, RunStatus
from sagad.errors import PermanentDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)


class Compensator:
    """Executes compensations; a failing one is retried until it is done or the lease is lost."""

    def __init__(self, *, store: Compensations, ledger: Ledger, metrics: Metrics, batch_limit: int) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._batch_limit = batch_limit
        self._holding: list[Compensation] = []
        self._refused: list[tuple[Compensation, PermanentDatabaseError]] = []

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
                with anyio.move_on_after(LOCKED_PAUSE_SECONDS):
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
        """Compensate the batch; returns the runs to try again (their rows were held by another transaction).

        A batch the database refuses is compensated run by run; the runs it refuses on their own
        are given back (by the supervisor, once this raises) after the others are done.
        """
        parts = await each_alone_on_refusal(batch, self._compensate_once, self._refuse)
        again = [message for part in parts for message in part]
        refused, self._refused = self._refused, []
        if refused:
            # The supervisor gives back what the actor holds: the refused runs, and the skipped ones,
            # which would otherwise stay in the ledger, renewed and never compensated.
            self._holding = [*(message for message, _ in refused), *again]
            raise refused[-1][1]
        return again

    async def _refuse(self, message: Compensation, error: PermanentDatabaseError) -> list[Compensation]:
        self._refused.append((message, error))
        return []

    async def _compensate_once(self, batch: Sequence[Compensation]) -> list[Compensation]:
        """One compensation statement for the batch, retrying transient errors."""
        tables = frozenset().union(*(message.tables for message in batch))
        undone = [(message.lease.run_id, undo) for message in batch for undo in message.undone]

        def on_retry(error: BaseException) -> None:
            log.warning("compensation of %d runs failed, retrying: %s", len(batch), error)
            self._metrics.db_errors.labels("transient").inc()
            self._metrics.compensation_failures.inc()

        started = time.perf_counter()
        try:
            async for attempt in retry_database_errors(on_retry):
                with attempt:
                    committed = await self._store.compensate([m.lease for m in batch], tables, undone)
        except PermanentDatabaseError:
            self._metrics.db_errors.labels("permanent").inc()
            self._metrics.compensation_failures.inc()
            raise
        self._metrics.compensation_duration.observe(time.perf_counter() - started)
        return self._record(batch, committed)

    def _record(self, batch: Sequence[Compensation], committed: Committed) -> list[Compensation]:
        for table, count in committed.rows.items():
            self._metrics.compensated_rows.labels(table).inc(count)
        again = []
        for message in batch:
            lease = message.lease
            if lease.run_id in committed.owned:
                self._ledger.finish(lease, RunStatus.COMPENSATED, committed.owned[lease.run_id])
                if lease.run_id in committed.cancel_waits:
                    self._metrics.cancel_to_compensated.observe(committed.cancel_waits[lease.run_id])
            elif lease.run_id in committed.skipped:
                again.append(message)
            else:
                self._metrics.fenced.labels("compensation").inc()
                self._ledger.lose([lease], "compensation")
        return again
