"""On a big table, every `runs list` filter and `runs show` read along an index, newest first, and stop at a page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sagad.domain.operations import RunFilter
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.operations import _HISTORY, _SHOW, cancel_page_query, list_query
from sagad.store.runs import STEP_NAMES_BOUND

pytestmark = pytest.mark.anyio

RUNS = 200_000

# Finished runs over the last ten days, with UUIDv7 ids of their submission time (as sagad makes them):
# 10% compensated at qc_evaluate, a few held up by an undo, a few cancelled; then 50 pending.
_FILL = """
    INSERT INTO workflow_runs (id, brief, status, next_step, available_at, submitted_at, finished_at,
                               failed_step, last_error, compensation_error, cancel_requested_at, failed_at)
    SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
            || substr(md5(n::text), 1, 3) || '8' || substr(md5(n::text), 4, 15))::uuid,
           '{}', s, CASE s WHEN 'completed' THEN 5 ELSE 3 END,
           CASE s WHEN 'compensating' THEN t END, t, CASE WHEN s <> 'compensating' THEN t END,
           CASE WHEN s <> 'completed' THEN 'qc_evaluate' END,
           CASE WHEN s <> 'completed' THEN 'qc_evaluate: score 0.2 below 0.5' END,
           CASE s WHEN 'compensating' THEN 'undo failed: 503' END,
           CASE WHEN n % 997 = 0 THEN t END,
           CASE WHEN s <> 'completed' THEN t END
    FROM generate_series(1, $1::int) AS n,
         LATERAL (SELECT now() - make_interval(secs => ($1 - n) * 864000.0 / $1) AS t) AS at,
         LATERAL (SELECT CASE WHEN n % 5000 = 0 THEN 'compensating' WHEN n % 10 = 0 THEN 'compensated'
                              ELSE 'completed' END) AS status(s)
"""


def _nodes(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    found = [(plan["Node Type"], plan.get("Relation Name"))]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


FILTERS = {
    "none": RunFilter(),
    "compensated": RunFilter(statuses=frozenset({RunStatus.COMPENSATED})),
    "pending": RunFilter(statuses=frozenset({RunStatus.PENDING})),
    "step": RunFilter(step=Step.QC_EVALUATE),
    "last hour": RunFilter(since=datetime.now(UTC) - timedelta(hours=1)),
    "error in the last day": RunFilter(error_contains="below", since=datetime.now(UTC) - timedelta(days=1)),
    "waiting on an undo": RunFilter(waiting_on_undo=True),
    "cancelled": RunFilter(cancelled=True),
}


@pytest.fixture
async def big(db: Database) -> Database:
    async with db.connection() as conn:
        await conn.execute(_FILL, RUNS)
        await conn.execute(
            "INSERT INTO workflow_runs (id, brief) SELECT gen_random_uuid(), '{}' FROM generate_series(1, 50)"
        )
        await conn.execute("VACUUM ANALYZE workflow_runs")
    return db


@pytest.mark.parametrize("name", list(FILTERS))
async def test_each_list_filter_reads_an_index_and_stops_at_a_page(big: Database, name: str) -> None:
    built = list_query(FILTERS[name], cursor=None, limit=50)
    [explained] = await big.fetch(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {built.sql}", *built.args)
    plan = explained[0][0]
    nodes = _nodes(plan["Plan"])
    assert ("Seq Scan", "workflow_runs") not in nodes, nodes
    # A page, not the table: a few hundred buffers at most (200,000 runs are some 5,000 pages).
    assert plan["Plan"]["Shared Hit Blocks"] + plan["Plan"].get("Shared Read Blocks", 0) < 1000, (name, plan)
    assert plan["Execution Time"] < 100, (name, plan["Execution Time"])


async def test_show_and_history_read_one_run_by_its_key(big: Database) -> None:
    [row] = await big.fetch("SELECT id FROM workflow_runs WHERE status = 'compensated' ORDER BY id LIMIT 1")
    for query, args in ((_SHOW, (row["id"],)), (_HISTORY, (row["id"], 1000, STEP_NAMES_BOUND))):
        [explained] = await big.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
        nodes = _nodes(explained[0][0]["Plan"])
        assert not any(node == "Seq Scan" for node, _ in nodes), nodes
        assert explained[0][0]["Execution Time"] < 20


@pytest.mark.parametrize("name", ["pending", "last hour", "step"])
async def test_a_cancel_by_filter_chooses_its_page_along_an_index(big: Database, name: str) -> None:
    built = cancel_page_query(FILTERS[name], cursor=None, limit=1000, reason="plan", by="test")
    [explained] = await big.fetch(f"EXPLAIN (FORMAT JSON) {built.sql}", *built.args)  # planned, not run
    nodes = _nodes(explained[0][0]["Plan"])
    assert ("Seq Scan", "workflow_runs") not in nodes, nodes
