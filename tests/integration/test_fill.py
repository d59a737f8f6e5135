"""The benchmarks' prefill: finished runs written in SQL hold what finished runs of the daemon hold."""

from __future__ import annotations

import time
import uuid

import pytest

from bench.fill import fill, store_id_kind
from sagad.store.audit import audit_database
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.schema import metadata
from tests.helpers import expected_totals, rows_per_table

pytestmark = pytest.mark.anyio

RUNS = 2_000


async def _orphans(db: Database) -> dict[str, int]:
    """Rows whose parent (by each declared foreign key) is missing, and outputs of no run."""
    found = {}
    for table in metadata.sorted_tables:
        for key in table.foreign_key_constraints:
            pairs = [(c.name, e.column) for c, e in zip(key.columns, key.elements, strict=True)]
            parent = pairs[0][1].table.name
            match = " AND ".join(f"p.{column.name} = t.{name}" for name, column in pairs)
            query = f"SELECT count(*) FROM {table.name} t WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
            found[f"{table.name} -> {parent}"] = int((await db.fetch(query))[0][0])
    query = "SELECT count(*) FROM step_outputs o WHERE NOT EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = o.run_id)"
    found["step_outputs -> workflow_runs"] = int((await db.fetch(query))[0][0])
    return found


async def test_filled_runs_hold_every_row_of_a_finished_run_and_pass_the_audit(database_url: str, db: Database) -> None:
    filled = await fill(database_url, RUNS)

    assert filled.runs == RUNS
    assert await RunStore(db).count_by_status() == {"completed": 1_800, "compensated": 200}
    assert await rows_per_table(db) == await expected_totals(db)
    outputs = await db.fetch(
        "SELECT count(*) FILTER (WHERE r.status = 'completed') AS completed, count(*) AS total"
        " FROM step_outputs o JOIN workflow_runs r ON r.id = o.run_id"
    )
    assert (outputs[0]["completed"], outputs[0]["total"]) == (5 * 1_800, 5 * 1_800)
    assert set((await _orphans(db)).values()) == {0}
    report = await audit_database(db)
    assert report.clean, report.render()


async def test_a_fill_makes_run_ids_of_the_kind_the_store_makes(database_url: str, db: Database) -> None:
    made = await store_id_kind(database_url)
    await fill(database_url, 100)

    submitted, _ = await RunStore(db).submit({"probe": True})
    versions = {row["id"].version for row in await db.fetch("SELECT id FROM workflow_runs WHERE id <> $1", submitted)}
    assert versions == {submitted.version}
    assert made == f"v{submitted.version}"


async def test_v7_ids_carry_their_submission_time_in_order(database_url: str, db: Database) -> None:
    started = time.time()
    await fill(database_url, RUNS, "v7")

    rows = await db.fetch("SELECT id, extract(epoch FROM submitted_at)::float8 AS at FROM workflow_runs ORDER BY id")
    ids: list[uuid.UUID] = [row["id"] for row in rows]
    assert {run_id.version for run_id in ids} == {7}
    assert {run_id.variant for run_id in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == RUNS
    millis = [run_id.int >> 80 for run_id in ids]
    assert millis == [int(row["at"] * 1000) for row in rows]  # the id's time is the submission's, to the ms
    # Spread over the last runs / 2000 seconds before the fill, as traffic at 2,000 runs/s would be.
    assert started - RUNS / 2_000 - 5 <= millis[0] / 1000 < millis[-1] / 1000 <= time.time()
    assert millis[-1] - millis[0] >= 0.9 * RUNS / 2
