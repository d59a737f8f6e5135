"""The guard every write of a held run goes through.

A daemon may write for a run only while the run row still names it (``claimed_by``) with the token
of its claim (``lease_token``). The rows are locked in id order, so two statements over
overlapping sets of runs (a step commit and a renewal) wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence

from sagad.domain.runs import Lease

FENCE_PARAMS = ("run_ids", "tokens", "worker")
"""What the fence reads, as $1-$3: a statement built on it names these first (``Statement.params``)."""


def locked_leases(where: str, extra_columns: str = "", extra_aliases: str = "", *, skip_locked: bool = False) -> str:
    """CTEs ``held`` (from ``FENCE_PARAMS``) and ``locked`` (the rows the fence lets through).

    ``extra_columns`` names more unnest inputs and ``extra_aliases`` their names in ``held``, e.g.
    ``", $4::text[]"`` and ``", failure"``. ``skip_locked`` passes over rows another transaction
    holds, instead of waiting for them: one stuck row must not hold up a whole batch.
    """
    return f"""
        held AS (
            SELECT * FROM unnest($1::uuid[], $2::bigint[]{extra_columns}) AS h(id, token{extra_aliases})
        ),
        locked AS (
            SELECT r.id FROM workflow_runs r JOIN held h ON h.id = r.id AND h.token = r.lease_token
            WHERE r.claimed_by = $3 AND ({where})
            ORDER BY r.id
            FOR NO KEY UPDATE OF r{" SKIP LOCKED" if skip_locked else ""}
        )"""


def skipped_leases(where: str) -> str:
    """The runs of ``held`` the fence would let through but ``locked`` passed over: another transaction holds them.

    Read without a lock, from the statement's snapshot: a run taken over meanwhile is reported
    skipped once, and fenced on the next try.
    """
    return f"""
        SELECT h.id FROM held h JOIN workflow_runs r ON r.id = h.id AND r.lease_token = h.token
        WHERE r.claimed_by = $3 AND ({where}) AND h.id NOT IN (SELECT id FROM locked)"""


def lease_arrays(leases: Sequence[Lease]) -> tuple[list[object], list[int]]:
    return [lease.run_id for lease in leases], [lease.token for lease in leases]
