"""Compensation: a failed run leaves nothing behind, children go before parents, in one transaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagad.domain.runs import Lease, LeaseToken, RunStatus, WorkerId
from sagad.domain.steps import BUSINESS_TABLES, Step
from sagad.errors import PermanentDatabaseError
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.store.schema import children_first, metadata
from sagad.store.steps import StepStore
from tests.helpers import TABLES, expected_rows, rows_of, running_daemon, shown, step_write, wait_terminal

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).parents[2] / "examples"


def example(name: str) -> dict[str, object]:
    brief: dict[str, object] = json.loads((EXAMPLES / name).read_text())
    return brief


async def test_happy_path_fills_all_ten_tables(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(example("brief.json"))
    async with running_daemon(db):
        assert await wait_terminal(db, [run_id]) == {run_id: "completed"}
    counts = await rows_of(db, run_id)
    assert all(counts[table] > 0 for table in TABLES), counts
    assert counts == await expected_rows(run_id, example("brief.json"))
    status = await shown(db, run_id)
    assert status is not None
    assert (status.status, status.last_error, status.claimed_by, status.lease_expires_at) == (
        RunStatus.COMPLETED,
        None,
        None,
        None,
    )


async def test_qc_failure_deletes_every_row_of_the_run(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(example("brief_qc_fail.json"))
    async with running_daemon(db):
        assert await wait_terminal(db, [run_id]) == {run_id: "compensated"}
    assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)
    status = await shown(db, run_id)
    assert status is not None
    assert status.failed_step == "qc_evaluate"
    assert status.last_error is not None
    assert "QC score 0.00 below threshold 0.70" in status.last_error
    assert "unsupported claim 'guaranteed'" in status.last_error


async def test_delivery_failure_deletes_the_rows_of_four_committed_steps(db: Database, runs: RunStore) -> None:
    run_id, _ = await runs.submit(example("brief_delivery_fail.json"))
    deleted_before = 0
    async with running_daemon(db) as daemon:
        assert await wait_terminal(db, [run_id]) == {run_id: "compensated"}
        for table in TABLES:
            deleted = daemon.metrics.registry.get_sample_value("sagad_compensated_rows_total", {"table": table})
            deleted_before += int(deleted or 0)
    assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)
    # Everything the first four steps wrote was deleted; delivery's own rows never existed.
    written = await expected_rows(
        run_id, {**example("brief_delivery_fail.json"), "delivery": {"target": "cms", "destination": "x"}}
    )
    four_steps = sum(n for table, n in written.items() if not table.startswith("delivery_"))
    assert deleted_before == four_steps
    status = await shown(db, run_id)
    assert status is not None
    assert status.failed_step == "deliver"
    assert status.last_error == (
        "deliver: delivery target 'email' rejected the package: 4500 words, over its limit of 2000"
    )


def test_delete_order_puts_every_child_before_its_parents() -> None:
    order = children_first(frozenset(TABLES))
    assert set(order) == set(TABLES)
    for name in BUSINESS_TABLES:
        for fk in metadata.tables[name].foreign_keys:
            parent = fk.column.table.name
            if parent in order:
                assert order.index(name) < order.index(parent), (name, parent)
    assert {fk.ondelete for t in metadata.tables.values() for fk in t.foreign_keys} == {None}


async def _completed_run_held_for_compensation(db: Database, runs: RunStore) -> Lease:
    """A run with rows in all ten tables, put back into 'compensating' under a fresh claim."""
    run_id, _ = await runs.submit(example("brief.json"))
    async with running_daemon(db):
        await wait_terminal(db, [run_id])
    await db.fetch(
        "UPDATE workflow_runs SET status = 'compensating', failed_step = 'deliver', last_error = 'test',"
        " claimed_by = 'w', lease_token = 7, available_at = now() + interval '1 minute' WHERE id = $1",
        run_id,
    )
    return Lease(run_id, LeaseToken(7))


async def test_compensation_of_all_ten_tables_succeeds_with_foreign_keys_enforced(db: Database, runs: RunStore) -> None:
    lease = await _completed_run_held_for_compensation(db, runs)
    before = await rows_of(db, lease.run_id)
    committed = await StepStore(db, WorkerId("w")).compensate([lease], frozenset(TABLES))
    assert committed.owned.keys() == {lease.run_id}
    assert committed.rows == {**before, "step_outputs": len(Step)}
    assert await rows_of(db, lease.run_id) == dict.fromkeys(TABLES, 0)


async def test_compensation_is_one_transaction(db: Database, runs: RunStore) -> None:
    lease = await _completed_run_held_for_compensation(db, runs)
    before = await rows_of(db, lease.run_id)
    # The parent-most table is deleted last; make that delete fail after nine others succeeded.
    async with db.transaction() as conn:
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON onboarding_brief FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    with pytest.raises(PermanentDatabaseError, match="refused by test"):
        await StepStore(db, WorkerId("w")).compensate([lease], frozenset(TABLES))
    assert await rows_of(db, lease.run_id) == before
    status = await shown(db, lease.run_id)
    assert status is not None
    assert status.status is RunStatus.COMPENSATING


async def test_compensating_one_run_leaves_other_runs_intact(db: Database, runs: RunStore) -> None:
    completed, _ = await runs.submit(example("brief.json"))
    async with running_daemon(db):
        await wait_terminal(db, [completed])
    # Run C is in flight at another daemon: claimed, two steps committed.
    in_flight, _ = await runs.submit(example("brief.json"))
    [claimed] = await runs.claim(WorkerId("other"), 1, 60)
    assert claimed.lease.run_id == in_flight
    other = StepStore(db, WorkerId("other"))
    for step in (Step.NORMALIZE_BRIEF, Step.GENERATE_STRATEGY):
        await other.commit_step(step, [await step_write(claimed.lease, claimed.brief, step)])
    failing, _ = await runs.submit(example("brief_delivery_fail.json"))
    before = {run: await rows_of(db, run) for run in (completed, in_flight)}

    async with running_daemon(db):
        assert await wait_terminal(db, [failing]) == {failing: "compensated"}

    assert {run: await rows_of(db, run) for run in (completed, in_flight)} == before
    assert sum(before[in_flight].values()) > 0
    status = await shown(db, in_flight)
    assert status is not None
    assert (status.status, status.current_step, status.claimed_by) == (RunStatus.RUNNING, "generate_draft", "other")
