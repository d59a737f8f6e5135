"""``sagad audit --since``: the runs of a recent window, read through the keys, whatever the history."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import new_run_id
from sagad.store.audit import _checks, audit_database, window
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.acceptance.test_cli_input import sagad
from tests.helpers import running_daemon, wait_terminal

pytestmark = pytest.mark.anyio

# A finished run of long ago, the way runs were stored before time-ordered ids (a random id).
_OLD_COMPLETED_RUN = """
    INSERT INTO workflow_runs (id, brief, status, next_step, available_at, finished_at, submitted_at)
    VALUES ($1, '{}', 'completed', 5, NULL, now() - interval '30 days', now() - interval '30 days')
"""


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_a_window_finds_what_is_wrong_in_it_and_only_there(db: Database, runs: RunStore) -> None:
    old = uuid.uuid4()
    await db.fetch(_OLD_COMPLETED_RUN, old)  # a completed run without its rows: wrong, but long ago
    recent = [(await runs.submit(sample_brief(Ending.COMPLETED, seed)))[0] for seed in range(3)]
    async with running_daemon(db):
        await wait_terminal(db, recent)

    whole = await audit_database(db)
    assert not whole.clean
    assert {str(old)} <= {example for finding in whole.findings for example in finding.examples}
    assert (await audit_database(db, since_seconds=3600)).clean

    await db.fetch("DELETE FROM delivery_artifacts WHERE run_id = $1", recent[0])  # now wrong, recently
    recent_audit = await audit_database(db, since_seconds=3600)
    assert [finding.invariant for finding in recent_audit.findings] == [
        "delivery_artifacts: every completed run has rows"
    ]
    assert recent_audit.findings[0].examples == (str(recent[0]),)
    assert recent_audit.runs_by_status == {"completed": 3}


def test_a_window_is_the_range_of_time_ordered_ids_of_its_runs() -> None:
    now = time.time()
    first, last = window(600, now=now)
    assert first.int >> 80 == int((now - 600) * 1000)
    assert last.int >> 80 == int(now * 1000) + 60_000  # a minute for another daemon's clock
    assert first <= new_run_id() <= last
    earlier, _ = window(1200, now=now)
    assert uuid.UUID(int=earlier.int | (1 << 80) - 1) < first  # a run of 20 minutes ago is outside


async def test_a_windowed_check_reads_the_keys_not_the_tables(db: Database) -> None:
    await db.fetch(
        "INSERT INTO workflow_runs (id, brief, status, next_step, available_at, finished_at)"
        " SELECT gen_random_uuid(), '{}', 'completed', 5, NULL, now() FROM generate_series(1, 20000)"
    )
    await db.fetch("ANALYZE workflow_runs")
    first, last = window(600)
    for invariant, query in _checks():
        if "$2" not in query:
            continue
        [explained] = await db.fetch(f"EXPLAIN (FORMAT JSON) {query}", first, last)
        nodes = _nodes(explained[0][0]["Plan"])  # json is decoded by the connection's codec
        assert "Seq Scan" not in nodes, (invariant, nodes)


@pytest.mark.parametrize("since", ["soon", "-5m", "0", "3w"])
def test_a_bad_window_is_refused_naming_the_option(since: str, database_url: str, tmp_path: Path) -> None:
    result = sagad("audit", "--since", since, "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    assert "--since must be a duration like 90s, 30m, 2h or 1d" in result.one_error_line()
