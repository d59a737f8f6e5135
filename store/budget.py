"""How a daemon shares its connection budget: the sessions it keeps, the pools, and what is left for commits.

Renewals and releases have a pool of their own, first served, so that commits waiting for a
connection never hold back a lease. A session feature (the worker lock, LISTEN) takes a connection
of its own, only where the budget leaves room and the connection offers it (a pooler does not); each
is a speed-up with a fallback: without the lock a dead daemon's runs wait for their leases, without
LISTEN the claimer polls. What is left is the work pool: claims, commits, samples, the reaper.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CONNECTIONS = 10
"""Eight daemons and a few operators' sessions fit in PostgreSQL's default max_connections (100)."""
MIN_CONNECTIONS = 3
"""One for renewals and releases, two for the work (a claim beside a commit)."""
_LOCK_FROM = 4
_LISTEN_FROM = 6
_TWO_PRIORITY_FROM = 20  # room for a renewal beside a release, or beside a connection being replaced


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """The connections one daemon may hold at once, by use; their sum is ``total``."""

    total: int
    priority: int
    """Renewals, take-over checks, releases, and cancelling statements at a stop."""
    lock: bool
    """A session holding the worker lock (``store/liveness.py``)."""
    listen: bool
    """A session listening for submissions (``store/notify.py``)."""
    work: int
    """Claims, step and compensation commits, samples and the reaper, in one pool."""

    @classmethod
    def split(cls, total: int, *, sessions: bool = True) -> ConnectionBudget:
        """``total`` shared by priority; ``sessions``: whether the URL offers session features at all."""
        if total < MIN_CONNECTIONS:
            raise ValueError(f"a daemon needs at least {MIN_CONNECTIONS} connections, got {total}")
        priority = 2 if total >= _TWO_PRIORITY_FROM else 1
        lock = sessions and total >= _LOCK_FROM
        listen = sessions and total >= _LISTEN_FROM
        return cls(total, priority, lock, listen, total - priority - lock - listen)

    def without_sessions(self) -> ConnectionBudget:
        """The same total, its session connections given to the work (a pooler's URL, no direct one)."""
        return ConnectionBudget(self.total, self.priority, False, False, self.work + self.lock + self.listen)

    @property
    def commits_in_flight(self) -> int:
        """Commits of one step at once: a second and third only where the work pool has room for them."""
        return max(1, min(3, self.work - 2))

    @property
    def commit_connections(self) -> int:
        """Step commits in flight at once, all steps together: the work pool but one, for claims and compensations."""
        return max(1, self.work - 1)
