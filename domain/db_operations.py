"""What sagad waits on the database for: each operation picks a pool and time limits, and labels timeouts."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    """One kind of database work; a typo is a type error, not the defaults."""

    CLAIM = "claim"
    RENEWAL = "renewal"
    """Lease renewals and take-over checks: the priority pool, under the renewal's shorter limits."""
    RELEASE = "release"
    """Giving runs back, and cancelling a stopping daemon's statements: the priority pool."""
    REAP = "reap"
    SAMPLE = "sample"
    LISTEN = "listen"
    LOCK = "lock"
    COMMIT = "commit"
    """Step and compensation commits, submissions and reads: the work pool."""


PRIORITY = frozenset({Operation.RENEWAL, Operation.RELEASE})
"""Operations that never wait behind step commits for a connection."""
