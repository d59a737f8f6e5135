"""Samples the database-wide view (runs by status, overdue runs) into gauges."""

from __future__ import annotations

import logging

import anyio

from sagad.actors.ports import Plans, RunLeases
from sagad.domain.runs import Lease, RunStatus, StatusSample
from sagad.errors import DatabaseUnreachable, TransientDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)

# Re-plan once this many runs exist, then each time the runs or the finished runs double.
REPLAN_FROM = 1_000


def outgrown(size: int, planned_for: int) -> bool:
    """Whether tables of ``size`` runs call for new plans, the last ones made at ``planned_for``."""
    return size >= max(REPLAN_FROM, 2 * planned_for)


class StatusSampler:
    """Every few seconds, samples runs by status and counts the claimed runs whose lease ran out.

    The backlog is counted, finished runs are estimated (see ``RunStore.sample_statuses``): the
    sample costs the same with a thousand finished runs as with a billion. It also tells how far the
    tables have grown: when they have doubled, the statement plans made for smaller tables are
    refreshed.
    """

    def __init__(self, *, store: RunLeases, plans: Plans, metrics: Metrics, every_seconds: float) -> None:
        self._store = store
        self._plans = plans
        self._metrics = metrics
        self._every = every_seconds
        self._planned_for = (0, 0)

    def abandon(self) -> list[Lease]:
        return []  # it holds no run of its own

    async def run(self) -> None:
        while True:
            try:
                sample = await self._store.sample_statuses()
                overdue = await self._store.count_overdue()
            except TransientDatabaseError as error:
                level = logging.DEBUG if isinstance(error, DatabaseUnreachable) else logging.WARNING
                log.log(level, "status sampling failed: %s", error)
            else:
                for status in RunStatus:
                    count = sample.finished.get(status, 0) if status.is_terminal else sample.in_flight.get(status, 0)
                    self._metrics.runs_by_status.labels(status.value).set(count)
                self._metrics.runs_overdue.set(overdue)
                self._metrics.intake_paused.set(int(sample.intake_paused))
                self._metrics.cancels_waiting.set(sample.cancels_waiting)
                self._metrics.oldest_cancel_seconds.set(sample.oldest_cancel_seconds)
                self._replan_if_grown(sample)
            await anyio.sleep(self._every)

    def _replan_if_grown(self, sample: StatusSample) -> None:
        sizes = (sample.total, sample.total - sum(sample.in_flight.values()))
        if any(outgrown(size, before) for size, before in zip(sizes, self._planned_for, strict=True)):
            log.info("tables have grown to %d runs (%d finished): refreshing statement plans", *sizes)
            self._plans.refresh_plans()
            self._planned_for = sizes
