"""``sagad loadtest`` with daemons of its own: it waits for each one's /readyz before it submits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_cli_input import sagad

pytestmark = pytest.mark.slow


def test_a_load_test_with_its_own_daemon_ends_every_run_as_built(database_url: str, tmp_path: Path) -> None:
    mix = ("--runs", "40", "--fail-qc", "0.1", "--invalid", "0.05")
    result = sagad("loadtest", *mix, "--daemons", "1", "--json", "--database-url", database_url, cwd=tmp_path)
    assert result.code == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"], report
    assert report["outcomes"] == {"completed": 34, "compensated": 6}, report
    assert "running (lease" in (tmp_path / ".sagad" / "loadtest-daemon-0.log").read_text()


def test_a_daemon_that_exits_at_start_ends_the_load_test_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = sagad(
        "loadtest", "--runs", "5", "--daemon-option=--log-level=loud", "--database-url", database_url, cwd=tmp_path
    )
    assert result.code == 1
    line = result.one_error_line()
    assert "a daemon exited with 1 at start" in line
    assert ".sagad/loadtest-daemon-0.log" in line
