"""The end of the backward path: deletes failed runs' rows, many runs in one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from anyio.streams.memory import MemoryObjectReceiveStream

from sagad.actors.batching import take_waiting
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, HasLease
from sagad.actors.ports import Compensations
from sagad.actors.retry import retrying
from sagad.domain.rows import Committed
from sagad.domain.runs import RunStatus
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
        self.in_hand: tuple[HasLease, ...] = ()

    async def run(self, inbox: MemoryObjectReceiveStream[Compensation]) -> None:
        async for first in inbox:
            batch = take_waiting(first, inbox, self._batch_limit)
            self.in_hand = tuple(batch)
            await self._compensate(batch)
            self.in_hand = ()

    async def _compensate(self, batch: Sequence[Compensation]) -> None:
        tables = frozenset().union(*(message.tables for message in batch))

        def on_retry(error: BaseException) -> None:
            log.warning("compensation of %d runs failed, retrying: %s", len(batch), error)
            self._metrics.db_errors.labels("transient").inc()
            self._metrics.compensation_failures.inc()

        started = time.perf_counter()
        try:
            async for attempt in retrying(on_retry):
                with attempt:
                    committed = await self._store.compensate([m.lease for m in batch], tables)
        except PermanentDatabaseError:
            self._metrics.db_errors.labels("permanent").inc()
            self._metrics.compensation_failures.inc()
            if len(batch) == 1:
                raise  # the supervisor frees the run; the next claim compensates it again
            for message in batch:
                await self._compensate([message])
            return
        self._metrics.compensation_duration.observe(time.perf_counter() - started)
        self._record(batch, committed)

    def _record(self, batch: Sequence[Compensation], committed: Committed) -> None:
        for table, count in committed.rows.items():
            self._metrics.compensated_rows.labels(table).inc(count)
        for message in batch:
            if message.lease.run_id in committed.owned:
                self._ledger.finish(message.lease, RunStatus.COMPENSATED, committed.owned[message.lease.run_id])
            else:
                self._metrics.fenced.labels("compensation").inc()
                self._ledger.drop([message.lease])
