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
    """CTEs ``held`` (from ``FENCE_PARAMS``) and ``locked`` (the rows of ``held`` the fence lets through).

    ``extra_columns`` names more unnest inputs and ``extra_aliases`` their names in ``held``, e.g.
    ``", $4::text[]"`` and ``", failure"``. ``skip_locked`` passes over rows another transaction
    holds, instead of waiting for them: one stuck row must not hold up a whole batch.

    Each run is looked up by its key, one after the other in id order (the lateral subquery keeps
    its lock, so it is never merged into a join the planner may reorder). Joined as tables, the
    planner took ``held`` for ten rows (it cannot see an array parameter's length) and the runs
    for one, and scanned ``held`` once per run: 250 runs cost 60,000 comparisons, twice a commit,
    two thirds of a step commit's time on the server. ``locked`` carries ``held``'s columns, so
    what follows need not join them again.
    """
    return f"""
        held AS (
            SELECT * FROM unnest($1::uuid[], $2::bigint[]{extra_columns}) AS h(id, token{extra_aliases})
        ),
        locked AS (
            SELECT h.* FROM (SELECT * FROM held ORDER BY id) AS h
            CROSS JOIN LATERAL (
                SELECT FROM workflow_runs r
                WHERE r.id = h.id AND r.lease_token = h.token AND r.claimed_by = $3 AND ({where})
                FOR NO KEY UPDATE OF r{" SKIP LOCKED" if skip_locked else ""}
            ) AS fenced
        )"""


def skipped_leases(where: str) -> str:
    """The runs of ``held`` the fence would let through but ``locked`` passed over: another transaction holds them.

    Read without a lock, from the statement's snapshot: a run taken over meanwhile is reported
    skipped once, and fenced on the next try. Each run is read by its key (a subquery per run of
    ``held`` not locked, usually none): as a join, the planner read every running run by the status
    index and scanned ``held`` once for each.
    """
    return f"""
        SELECT h.id FROM held h
        WHERE h.id NOT IN (SELECT id FROM locked) AND (
            SELECT r.lease_token = h.token AND r.claimed_by = $3 AND ({where})
            FROM workflow_runs r WHERE r.id = h.id
        )"""


def lease_arrays(leases: Sequence[Lease]) -> tuple[list[object], list[int]]:
    return [lease.run_id for lease in leases], [lease.token for lease in leases]
