"""Takes the runs of dead daemons back at once, instead of after their leases."""

from __future__ import annotations

import logging
import random

import anyio

from sagad.actors.ports import DeadWorkers
from sagad.domain.runs import Lease, WorkerId
from sagad.errors import DatabaseUnreachable, TransientDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)


class Reaper:
    """Every pass, one statement: the runs of workers whose lock is free become claimable now.

    Every daemon holds a lock on its worker id for its whole life, and PostgreSQL frees it when the
    daemon's session ends. A worker found with live leases and a free lock in two passes in a row (so
    that a daemon taking its lock again after a cut connection is not taken for dead) is gone. A false
    positive costs work, never correctness: the runs' fencing tokens refuse the old holder's writes.

    The same statement ends sessions that hold run rows in a transaction while waiting on their client
    mid-statement for ``stalled_seconds``: the one way a frozen daemon could keep its locks past its
    lease on PostgreSQL before 17 (``store/limits.py``).
    """

    def __init__(
        self, *, store: DeadWorkers, metrics: Metrics, worker: WorkerId, every_seconds: float, stalled_seconds: float
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._worker = worker
        self._every = every_seconds
        self._stalled_seconds = stalled_seconds

    def abandon(self) -> list[Lease]:
        return []  # it holds no run of its own

    async def run(self) -> None:
        suspects: frozenset[WorkerId] = frozenset()
        while True:
            # Jittered, so that the passes of many daemons do not meet on the same locks.
            await anyio.sleep(self._every * random.uniform(0.8, 1.2))
            try:
                found, ended = await self._store.free_runs_of_dead(self._worker, suspects, self._stalled_seconds)
            except TransientDatabaseError as error:
                level = logging.DEBUG if isinstance(error, DatabaseUnreachable) else logging.WARNING
                log.log(level, "looking for dead daemons failed: %s", error)
                continue
            for worker, freed in found.items():
                if freed:
                    log.warning(
                        "daemon %r is gone (its worker lock is free): %d of its runs claimable now", worker, freed
                    )
                    self._metrics.reaped_runs.inc(freed)
            if ended:
                log.warning("ended %d sessions stalled on their client inside a transaction", ended)
                self._metrics.stalled_sessions_ended.inc(ended)
            suspects = frozenset(found)
