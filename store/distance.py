"""How far the database is, and what a daemon holds and commits at once because of it.

A statement costs a round trip however many runs it carries, and a daemon has a few connections
(``--max-connections``). Near the database a batch of 100 runs keeps every connection busy; far
from it, a connection carries a batch per round trip, so the throughput is the batch times the
connections over the round trip. A daemon that did not say otherwise (``--batch-limit``,
``--max-inflight``) therefore batches more the farther the database is, and holds runs enough to
fill those batches at every step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from sagad.errors import DatabaseError
from sagad.store.db import Database

NEAR_BATCH = 100
"""The batch limit up to ``COVERED_ROUND_TRIP_SECONDS``: what a database on the same network needs."""
COVERED_ROUND_TRIP_SECONDS = 0.04
"""The round trip a batch of ``NEAR_BATCH`` covers; beyond it the batch grows with the round trip."""
MOST_BATCH = 500
"""The largest batch chosen for distance: a statement's own work grows with its batch, and so does a retry's."""
RUNS_PER_BATCH = 10
"""Runs in flight per run of batch limit: five steps' batches, each committing while the next one fills."""
_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class Depth:
    """The batch limit and the runs in flight a daemon uses by default."""

    batch_limit: int
    max_inflight: int

    @classmethod
    def for_round_trip(cls, seconds: float) -> Depth:
        """The depth that keeps the connections busy ``seconds`` of round trip away (1,000 runs of 100 near)."""
        scale = max(1.0, seconds / COVERED_ROUND_TRIP_SECONDS)
        batch = min(MOST_BATCH, int(round(NEAR_BATCH * scale, -1)))
        return cls(batch, RUNS_PER_BATCH * batch)


MOST_INFLIGHT = RUNS_PER_BATCH * MOST_BATCH
"""The most runs in flight the depth may choose."""


async def round_trip(db: Database) -> float:
    """The median of a few empty statements' times, in seconds: the database's distance (0 when it did not answer)."""
    times = []
    try:
        for _ in range(_SAMPLES):
            started = time.perf_counter()
            await db.fetch("SELECT 1")
            times.append(time.perf_counter() - started)
    except DatabaseError:
        return 0.0  # the claims will find out, and wait for it as for any outage; near until then
    return statistics.median(times)
