"""Several daemon processes on one database: shared work, crashes, clean shutdown."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import RunId
from sagad.endpoint import answer
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from tests.helpers import expected_totals, rows_per_table, wait_finished, wait_terminal
from tests.processes import Daemon, sagad

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MIX = [Ending.COMPLETED] * 7 + [Ending.QC_FAIL, Ending.DELIVERY_FAIL, Ending.INVALID]


@pytest.fixture
def daemons(database_url: str, tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.ensure_stopped()


async def submit_mix(runs: RunStore, n: int) -> dict[RunId, Ending]:
    outcomes = [MIX[seed % len(MIX)] for seed in range(n)]
    results = await runs.submit_many([(sample_brief(o, seed), None) for seed, o in enumerate(outcomes)])
    return {run_id: outcome for (run_id, _), outcome in zip(results, outcomes, strict=True)}


async def assert_all_ended_as_built(db: Database, outcomes: dict[RunId, Ending], seconds: float) -> None:
    statuses = await wait_terminal(db, outcomes, seconds=seconds)
    wrong = {
        run: status
        for run, status in statuses.items()
        if status != ("completed" if outcomes[run] is Ending.COMPLETED else "compensated")
    }
    assert not wrong
    # No step effect twice, no effect left behind: exactly the completed runs' rows, each once.
    assert await rows_per_table(db) == await expected_totals(db)


def assert_audit_clean(database_url: str) -> None:
    audit = sagad("audit", "--database-url", database_url)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit clean" in audit.stdout


async def test_two_daemons_share_300_runs_and_leave_a_clean_audit(
    database_url: str, db: Database, runs: RunStore, daemons: list[Daemon], tmp_path: Path
) -> None:
    for worker in ("alpha", "beta"):
        daemons.append(Daemon(database_url, worker, tmp_path, "--max-inflight", "40", "--batch-limit", "20").start())
    for daemon in daemons:
        await daemon.ready()
    outcomes = await submit_mix(runs, 300)

    await assert_all_ended_as_built(db, outcomes, seconds=90)

    claims = [await daemon.metric("sagad_claims_total") for daemon in daemons]
    assert all(claims), f"a daemon claimed nothing: {claims}"
    assert sum(claims) >= 300
    for daemon in daemons:
        await daemon.endpoint_url()
        daemon.signal(signal.SIGTERM)
    assert [await daemon.wait() for daemon in daemons] == [0, 0]
    assert_audit_clean(database_url)


async def test_a_daemon_killed_mid_load_is_finished_by_another(
    database_url: str, db: Database, runs: RunStore, daemons: list[Daemon], tmp_path: Path
) -> None:
    victim = Daemon(
        database_url, "victim", tmp_path, "--lease-seconds", "2", "--batch-limit", "5", "--max-inflight", "100"
    )
    daemons.append(victim.start())
    await victim.ready()
    outcomes = await submit_mix(runs, 400)
    await wait_finished(db, 20)

    victim.signal(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL
    held = (await db.fetch("SELECT count(*) FROM workflow_runs WHERE claimed_by = 'victim'"))[0][0]
    rescuer = Daemon(database_url, "rescuer", tmp_path, "--lease-seconds", "2")
    daemons.append(rescuer.start())

    await assert_all_ended_as_built(db, outcomes, seconds=90)
    assert held > 0, "the victim held no run when it was killed"
    assert await rescuer.stop() == 0
    assert_audit_clean(database_url)


async def test_a_daemon_process_is_ready_once_its_first_claim_completes_and_answers_its_probes(
    database_url: str, db: Database, daemons: list[Daemon], tmp_path: Path
) -> None:
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        # The claim statement waits behind this lock: the daemon is up, but has not claimed.
        await locker.execute("BEGIN; LOCK TABLE workflow_runs IN ACCESS EXCLUSIVE MODE")
        daemon = Daemon(database_url, "probed", tmp_path)
        daemons.append(daemon.start())
        url = await daemon.endpoint_url()
        assert url.startswith("http://127.0.0.1:")
        await _wait_claim_blocked(db)
        assert await anyio.to_thread.run_sync(answer, f"{url}/readyz") == 503
        assert await anyio.to_thread.run_sync(answer, f"{url}/healthz") == 200
        await locker.execute("COMMIT")
    finally:
        await locker.close()

    await daemon.ready(seconds=10)
    assert await anyio.to_thread.run_sync(answer, f"{url}/metrics") == 200
    assert await anyio.to_thread.run_sync(answer, f"{url}/status") == 404
    assert await daemon.stop() == 0


async def _wait_claim_blocked(db: Database) -> None:
    """Wait until the daemon's claim statement waits on the test's lock."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE workflow_runs%'"
    )
    with anyio.fail_after(20):
        while True:
            if (await db.fetch(query))[0][0]:
                return
            await anyio.sleep(0.05)
