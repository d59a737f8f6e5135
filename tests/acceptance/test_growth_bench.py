"""``python -m bench.growth``: each size filled, loaded by the real daemon, audited, and set against size 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from sagad.store.db import asyncpg_dsn

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


async def _growth_databases(server_url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'sagad_growth_%'")
        return {row[0] for row in rows}
    finally:
        await conn.close()


def test_each_size_is_filled_loaded_and_audited_then_set_against_empty_tables(server_url: str) -> None:
    before = anyio.run(_growth_databases, server_url)
    command = [sys.executable, "-m", "bench.growth", "--database-url", server_url, "--sizes", "0,1000"]
    done = subprocess.run(
        [*command, "--runs", "300", "--rounds", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [size["size"] for size in report["sizes"]] == [0, 1_000]
    for size in report["sizes"]:
        load = size["load"]
        assert load["ok"], load
        assert load["outcomes"] == {"completed": 270, "compensated": 30}
        assert load["runs_per_s"] > 0
        assert 0 < load["p50_ms"] <= load["p99_ms"]
        assert load["cpu_ms_per_run"]["daemon"] > 0
        assert load["cpu_ms_per_run"]["postgresql"] >= load["cpu_ms_per_run"]["postgresql_this_database"] > 0
        assert load["wal_per_run"]["kib"] > 0
        assert size["audit"]["clean"]
        assert [r["ok"] for r in size["rounds"]] == [True, True]
        assert load["runs_per_s"] in [r["runs_per_s"] for r in size["rounds"]]
    assert report["sizes"][1]["fill"]["database_bytes"] > report["sizes"][0]["fill"]["database_bytes"]
    assert set(report["ratios"]) == {"1000"}
    assert anyio.run(_growth_databases, server_url) == before  # each one dropped after its measurement
