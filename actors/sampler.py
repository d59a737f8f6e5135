"""Samples the database-wide view (runs by status, overdue runs) into gauges."""

from __future__ import annotations

import logging

import anyio

from actors.messages import HasLease
from actors.ports import RunLeases
from errors import TransientDatabaseError
from metrics import Metrics
from store.schema import STATUSES

log = logging.getLogger(__name__)


class StatusSampler:
    """Every few seconds, counts runs by status and the claimed runs whose lease ran out."""

    def __init__(self, *, store: RunLeases, metrics: Metrics, every_seconds: float) -> None:
        self._store = store
        self._metrics = metrics
        self._every = every_seconds
        self.in_hand: tuple[HasLease, ...] = ()

    async def run(self) -> None:
        while True:
            try:
                counts = await self._store.count_by_status()
                overdue = await self._store.count_overdue()
            except TransientDatabaseError as error:
                log.warning("status sampling failed: %s", error)
            else:
                for status in STATUSES:
                    self._metrics.runs_by_status.labels(status).set(counts.get(status, 0))
                self._metrics.runs_overdue.set(overdue)
            await anyio.sleep(self._every)
