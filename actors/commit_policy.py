"""When a step actor commits the runs whose calls have finished: at once, after a pause, or once a commit ends.

A pure decision on the actor's state and the time it is told, so that its tests run on a fake
clock with no sleeps; the actor does the waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NEAR_COMMIT_SECONDS = 0.01
"""Longer than a step's commit takes on a database nearby, shorter than one round trip to a far one."""
LINGER_SHARE = 0.05
"""Of a step's typical call time, how long a run that finished waits for others to commit with."""
LINGER_CAP_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """How a step actor batches its commits.

    One commit is in flight at a time while commits are quick (the next batch gathers meanwhile).
    Another starts beside it, up to ``commits_in_flight``, only once runs have waited
    ``pipeline_after_seconds`` and the newest commit has taken longer than a near database takes
    (a database far away): near, each commit would otherwise take the few runs that finished in
    the last milliseconds, and the server's cost per statement, not the runs, would fill its CPU.

    With no commit in flight, the first run to finish a step that waits on something lingers, up
    to ``linger_share`` of the step's typical call time (at most ``linger_cap_seconds``) or until
    the batch is full, for others to commit with. Slow calls finish one by one: committed as they
    come, in batches of a few, the cost of each statement takes the CPU of the database and of
    the daemon from the runs. A run of a 1 s step waits 50 ms at most.
    """

    batch_limit: int
    instant: bool = False
    """The step never waits on anything: its runs never linger."""
    commits_in_flight: int = 4
    pipeline_after_seconds: float = 0.005
    near_commit_seconds: float = NEAR_COMMIT_SECONDS
    linger_share: float = LINGER_SHARE
    linger_cap_seconds: float = LINGER_CAP_SECONDS

    def pause(
        self, *, now: float, waiting: int, oldest: float, committing: int, last_started: float, typical_call: float
    ) -> float:
        """Seconds until the ``waiting`` runs (the first finished at ``oldest``) are committed.

        0: now. ``math.inf``: not before a commit in flight ends. ``committing`` commits are in
        flight, the newest started at ``last_started``; a call of the step takes ``typical_call``.
        """
        if committing:
            if committing >= self.commits_in_flight:
                return math.inf
            # Until both have passed: the waiting runs' pause, and a near commit's time.
            return max(oldest + self.pipeline_after_seconds - now, last_started + self.near_commit_seconds - now, 0.0)
        if self.instant or waiting >= self.batch_limit:
            return 0.0
        linger = min(self.linger_cap_seconds, self.linger_share * typical_call)
        return max(oldest + linger - now, 0.0)
