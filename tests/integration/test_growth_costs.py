"""What a daemon reads every few seconds costs the same however many finished runs the tables hold."""

from __future__ import annotations

from typing import Any

import pytest

from sagad.domain.runs import RunStatus
from sagad.store.db import Database
from sagad.store.runs import _IN_FLIGHT, EXACT_BELOW, RunStore

pytestmark = pytest.mark.anyio

_FINISHED = """
    INSERT INTO workflow_runs (id, brief, status, next_step, available_at, finished_at, failed_step, last_error)
    SELECT gen_random_uuid(), '{}', s, CASE s WHEN 'completed' THEN 5 ELSE 3 END, NULL, now(),
           CASE s WHEN 'compensated' THEN 'qc_evaluate' END, CASE s WHEN 'compensated' THEN 'x' END
    FROM generate_series(1, $1::int) AS n, LATERAL (SELECT CASE WHEN n % 10 = 0 THEN 'compensated'
                                                           ELSE 'completed' END) AS status(s)
"""
_PENDING = "INSERT INTO workflow_runs (id, brief) SELECT gen_random_uuid(), '{}' FROM generate_series(1, $1::int)"


def _scans(plan: Any) -> set[str]:
    """Every node type of a JSON plan."""
    found = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found


async def test_the_backlog_is_counted_and_finished_runs_estimated_without_reading_them(
    db: Database, runs: RunStore
) -> None:
    async with db.connection() as conn:
        await conn.execute(_FINISHED, EXACT_BELOW + 10_000)
        await conn.execute(_PENDING, 40)
        # The inserts' counts reach the server's statistics before ANALYZE sets them, not after it
        # (when they would be counted twice): as they would have long since in a running database.
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("ANALYZE workflow_runs")
    sample = await runs.sample_statuses()
    assert sample.in_flight == {RunStatus.PENDING: 40}
    assert sample.finished[RunStatus.COMPLETED] == pytest.approx((EXACT_BELOW + 10_000) * 0.9, rel=0.05)
    assert sample.finished[RunStatus.COMPENSATED] == pytest.approx((EXACT_BELOW + 10_000) * 0.1, rel=0.2)
    assert sample.total == pytest.approx(EXACT_BELOW + 10_040, rel=0.05)

    [explained] = await db.fetch(f"EXPLAIN (FORMAT JSON) {_IN_FLIGHT}")
    nodes = _scans(explained[0][0]["Plan"])  # json is decoded by the connection's codec
    assert "Seq Scan" not in nodes, nodes


async def test_a_table_never_analyzed_still_gives_an_exact_backlog(db: Database, runs: RunStore) -> None:
    await db.fetch(_PENDING, 25)
    sample = await runs.sample_statuses()
    assert sample.in_flight == {RunStatus.PENDING: 25}
    assert sample.total >= 25
    assert set(sample.finished.values()) <= {0}


async def test_a_young_table_is_counted_exactly(db: Database, runs: RunStore) -> None:
    await db.fetch(_FINISHED, 1_000)
    await db.fetch(_PENDING, 7)
    sample = await runs.sample_statuses()
    assert sample.in_flight == {RunStatus.PENDING: 7}
    assert sample.finished == {RunStatus.COMPLETED: 900, RunStatus.COMPENSATED: 100}
    assert sample.total == 1_007
