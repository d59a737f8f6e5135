"""``sagad loadtest`` rides out its own connections cut and a PostgreSQL restart, and says how long it waited."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from sagad.store.db import Database
from tests.chaos.invariants import report
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import count_when_reachable, wait_count
from tests.processes import REPO

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUNS = 600
SUBMITTED = "SELECT count(*) FROM workflow_runs"
FINISHED = "SELECT count(*) FROM workflow_runs WHERE status IN ('completed', 'compensated')"
TERMINATE_OTHERS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def test_a_load_test_rides_out_a_restart_and_its_connections_cut_and_reports_the_wait(
    throwaway_server: ThrowawayServer, throwaway_database_url: str, tmp_path: Path
) -> None:
    url = throwaway_database_url
    out, err = tmp_path / "report.json", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "sagad", "loadtest", "--runs", str(RUNS), "--fail-qc", "0.2", "--json",
               "--rate", "300", "--daemon-option=--lease-seconds=2", "--timeout", "120"]  # fmt: skip
    db = await Database.connect(url, max_size=2)
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            env = {**os.environ, "SAGAD_DATABASE_URL": url}
            process = await anyio.open_process(command, stdout=stdout, stderr=stderr, cwd=REPO, env=env)
            try:
                await wait_count(db, SUBMITTED, RUNS // 4, seconds=60)
                # Its own connections (and its daemon's) ended by the server, mid-load.
                cut = await count_when_reachable(db, TERMINATE_OTHERS)
                await wait_count(db, FINISHED, RUNS // 3, seconds=60)
                await anyio.to_thread.run_sync(throwaway_server.stop)
                await anyio.sleep(2.0)
                await anyio.to_thread.run_sync(throwaway_server.start)
                with anyio.fail_after(150):
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    finally:
        await db.close()
    assert code == 0, err.read_text()[-3000:] + out.read_text()[-2000:]
    result = json.loads(out.read_text())
    assert result["ok"], result
    assert result["runs"] == RUNS
    assert result["unfinished"] == 0
    assert result["outcomes"] == {"completed": RUNS * 4 // 5, "compensated": RUNS // 5}
    outages = result["database_outages"]
    assert outages["count"] >= 1
    assert outages["waited_s"] >= 1.0, outages  # the server was down for 2 s
    assert "Traceback" not in err.read_text()
    report(
        "load test through an outage",
        runs=RUNS,
        connections_cut=cut,
        restarts=1,
        outages_seen=outages["count"],
        waited_for_the_database=f"{outages['waited_s']:.1f}s",
        throughput=f"{result['throughput_runs_per_s']} runs/s",
        audit_clean=result["audit"]["clean"],
    )
