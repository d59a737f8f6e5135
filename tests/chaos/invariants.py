"""What every chaos scenario checks afterwards, with ``sagad audit`` and with plain SQL."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import anyio

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.helpers import TABLES, expected_rows, expected_totals, rows_per_table, wait_terminal
from tests.processes import sagad

MIX = (Ending.COMPLETED,) * 7 + (Ending.QC_FAIL, Ending.DELIVERY_FAIL, Ending.INVALID)
FAILING = (Ending.QC_FAIL, Ending.DELIVERY_FAIL, Ending.QC_FAIL, Ending.DELIVERY_FAIL, Ending.INVALID)


async def submit_mix(
    runs: RunStore, n: int, *, first_seed: int = 0, mix: Sequence[Ending] = MIX
) -> dict[RunId, Ending]:
    """Submit ``n`` briefs in one transaction, built to end as ``mix`` says (cycled)."""
    seeds = range(first_seed, first_seed + n)
    outcomes = [mix[seed % len(mix)] for seed in seeds]
    results = await runs.submit_many([(sample_brief(o, seed), None) for seed, o in zip(seeds, outcomes, strict=True)])
    return {run_id: outcome for (run_id, _), outcome in zip(results, outcomes, strict=True)}


async def held_by(db: Database, worker: str) -> dict[RunId, int]:
    """Runs ``worker`` holds and has not finished, with the token of its claim."""
    rows = await db.fetch(
        "SELECT id, lease_token FROM workflow_runs WHERE claimed_by = $1 AND status IN ('running', 'compensating')",
        worker,
    )
    return {RunId(row["id"]): int(row["lease_token"]) for row in rows}


async def holds_at_least(db: Database, worker: str, n: int) -> bool:
    return len(await held_by(db, worker)) >= n


@dataclass(frozen=True, slots=True)
class RowAccount:
    """Business rows compared run by run with what each run's outcome calls for."""

    lost: int
    """Rows a completed run should hold and does not."""
    orphaned: int
    """Rows of a run that did not complete (compensated, failed, unknown)."""
    duplicated: int
    """Rows a completed run holds beyond what its brief produces."""


async def account_rows(db: Database) -> RowAccount:
    completed: dict[uuid.UUID, dict[str, int]] = {
        row["id"]: await expected_rows(row["id"], row["brief"])
        for row in await db.fetch("SELECT id, brief FROM workflow_runs WHERE status = 'completed'")
    }
    lost = orphaned = duplicated = 0
    for table in TABLES:
        actual = Counter(
            {
                row["run_id"]: int(row["n"])
                for row in await db.fetch(f"SELECT run_id, count(*) AS n FROM {table} GROUP BY run_id")
            }
        )
        orphaned += sum(n for run, n in actual.items() if run not in completed)
        for run, expected in completed.items():
            lost += max(0, expected[table] - actual[run])
            duplicated += max(0, actual[run] - expected[table])
    return RowAccount(lost=lost, orphaned=orphaned, duplicated=duplicated)


async def assert_audit_clean(database_url: str) -> None:
    audit = await anyio.to_thread.run_sync(partial(sagad, "audit", "--database-url", database_url))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit clean" in audit.stdout, audit.stdout


async def assert_ended_as_built(
    db: Database, database_url: str, outcomes: dict[RunId, Ending], *, seconds: float
) -> RowAccount:
    """Every run terminal and ended as its brief was built; exactly the completed runs' rows; audit clean."""
    statuses = await wait_terminal(db, outcomes, seconds=seconds)
    wrong = {
        run: status
        for run, status in statuses.items()
        if status != ("completed" if outcomes[run] is Ending.COMPLETED else "compensated")
    }
    if wrong:
        rows = await db.fetch(
            "SELECT id, status, attempts, last_error FROM workflow_runs WHERE id = ANY($1::uuid[]) LIMIT 5", list(wrong)
        )
        examples = [
            (str(r["id"]), outcomes[RunId(r["id"])].value, r["status"], r["attempts"], r["last_error"]) for r in rows
        ]
        raise AssertionError(f"{len(wrong)} runs did not end as built, e.g. {examples}")
    unfinished = await db.fetch("SELECT count(*) FROM workflow_runs WHERE status NOT IN ('completed', 'compensated')")
    assert unfinished[0][0] == 0, f"{unfinished[0][0]} runs in the database are not terminal"
    # No step effect twice, none left behind: exactly the completed runs' rows, each once.
    assert await rows_per_table(db) == await expected_totals(db)
    account = await account_rows(db)
    assert account == RowAccount(lost=0, orphaned=0, duplicated=0)
    await assert_audit_clean(database_url)
    return account


def report(scenario: str, **figures: object) -> None:
    """One line of figures per scenario (run pytest with ``-s`` to see them)."""
    print(f"\nCHAOS {scenario}: " + ", ".join(f"{name.replace('_', ' ')}={value}" for name, value in figures.items()))


async def max_attempts(db: Database) -> int:
    """The most claims any run took (a run claimed more than ``--max-attempts`` is failed as poison)."""
    return int((await db.fetch("SELECT coalesce(max(attempts), 0) FROM workflow_runs"))[0][0])
