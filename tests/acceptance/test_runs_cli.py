"""``sagad runs`` and ``sagad intake`` as an operator types them: good input, and bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_cli_input import Result, fetch, sagad

EXAMPLES = Path(__file__).parents[2] / "examples"
NO_RUN = "00000000-0000-0000-0000-000000000000"


def run(database_url: str, tmp_path: Path, *args: str) -> Result:
    return sagad(*args, "--database-url", database_url, cwd=tmp_path)


def submit(database_url: str, tmp_path: Path) -> str:
    done = run(database_url, tmp_path, "submit", str(EXAMPLES / "brief.json"))
    assert done.code == 0, done.stderr
    return done.stdout.strip()


def snapshot(database_url: str) -> list[dict[str, object]]:
    return fetch(
        database_url, "SELECT id, status, last_error, cancel_requested_at, retry_of FROM workflow_runs ORDER BY id"
    )


def test_list_show_cancel_and_retry_one_run(database_url: str, tmp_path: Path) -> None:
    run_id = submit(database_url, tmp_path)
    listed = run(database_url, tmp_path, "runs", "list", "--status", "pending")
    assert listed.code == 0 and run_id in listed.stdout and "normalize_brief" in listed.stdout
    assert run(database_url, tmp_path, "runs", "list", "--count").stdout == "1\n"
    cancelled = run(database_url, tmp_path, "runs", "cancel", run_id, "--reason", "withdrawn")
    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.stdout == f"{run_id} compensated\n"
    shown = json.loads(run(database_url, tmp_path, "runs", "show", run_id, "--json").stdout)
    assert (shown["status"], shown["last_error"]) == ("compensated", "cancelled: withdrawn")
    assert [event["event"] for event in shown["history"]] == ["cancel requested", "compensated"]
    retried = run(database_url, tmp_path, "runs", "retry", run_id)
    assert retried.code == 0 and retried.stdout.startswith(f"{run_id} created -> ")
    new_run = retried.stdout.split()[-1]
    again = run(database_url, tmp_path, "runs", "retry", run_id)
    assert again.stdout == f"{run_id} already retried -> {new_run}\n"
    lines = [json.loads(line) for line in run(database_url, tmp_path, "runs", "list", "--jsonl").stdout.splitlines()]
    assert [line["run_id"] for line in lines] == [new_run, run_id]
    assert lines[0]["retry_of"] == run_id and lines[1]["retried_by"] == new_run
    person = run(database_url, tmp_path, "runs", "show", run_id).stdout
    assert "history:" in person and "cancel requested" in person


def test_bulk_cancel_by_filter_counts_asks_and_pages(database_url: str, tmp_path: Path) -> None:
    ids = {submit(database_url, tmp_path) for _ in range(5)}
    unconfirmed = run(database_url, tmp_path, "runs", "cancel", "--status", "pending", "--reason", "bad batch")
    assert unconfirmed.code != 0 and "pass --yes" in unconfirmed.stderr
    dry = run(database_url, tmp_path, "runs", "cancel", "--status", "pending", "--reason", "x", "--dry-run")
    assert set(dry.stdout.split()) == ids and "5 runs match" in dry.stderr
    assert {row["status"] for row in snapshot(database_url)} == {"pending"}
    done = run(
        database_url,
        tmp_path,
        "runs",
        "cancel",
        "--status",
        "pending",
        "--reason",
        "bad batch",
        "--yes",
        "--page-size",
        "2",
    )
    assert done.code == 0, done.stderr
    assert sorted(done.stdout.split()[::2]) == sorted(ids)
    assert {row["status"] for row in snapshot(database_url)} == {"compensated"}


def test_intake_pause_resume_status(database_url: str, tmp_path: Path) -> None:
    paused = run(database_url, tmp_path, "intake", "pause", "--reason", "deploy")
    assert paused.code == 0 and paused.stdout.startswith("intake paused (deploy)")
    status = json.loads(run(database_url, tmp_path, "intake", "status", "--json").stdout)
    assert (status["paused"], status["reason"]) == (True, "deploy")
    assert run(database_url, tmp_path, "intake", "resume").stdout.startswith("intake running")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("runs", "show", "not-a-run"), "not a run id"),
        (("runs", "show", NO_RUN), f"no run {NO_RUN}"),
        (("runs", "cancel", NO_RUN, "--reason", "x"), f"no run {NO_RUN}"),
        (("runs", "cancel", "nope", "--reason", "x"), "not a run id"),
        (("runs", "cancel", NO_RUN), "--reason is required"),
        (("runs", "cancel", "--reason", "x"), "every run is never implied"),
        (("runs", "retry", NO_RUN), f"no run {NO_RUN}"),
        (("runs", "list", "--status", "done"), "--status must be one of"),
        (("runs", "list", "--step", "publish"), "--step must be one of"),
        (("runs", "list", "--since", "yesterday"), "--since must be an age"),
        (("runs", "list", "--since", "2026-12-01T10:00:00"), "must carry a time zone"),
        (("runs", "list", "--since", "1h", "--until", "2h"), "since must come before until"),
        (("runs", "list", "--cursor", "zzz"), "not a cursor"),
        (("runs", "list", "--error", "a\nb"), "error text must be"),
        (("runs", "prune-history", "--older-than", "soon"), "--older-than must be"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    database_url: str, tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    submit(database_url, tmp_path)
    before = snapshot(database_url)
    result = run(database_url, tmp_path, *args)
    assert result.code != 0
    assert expected in result.one_error_line()
    assert snapshot(database_url) == before


def test_a_completed_run_is_refused_in_one_line_and_a_non_zero_exit(database_url: str, tmp_path: Path) -> None:
    run_id = submit(database_url, tmp_path)
    fetch(
        database_url,
        "UPDATE workflow_runs SET status = 'completed', next_step = 5, available_at = NULL, finished_at = now()"
        " WHERE id = $1",
        run_id,
    )
    before = snapshot(database_url)
    result = run(database_url, tmp_path, "runs", "cancel", run_id, "--reason", "too late")
    assert result.code != 0
    assert result.stdout == f"{run_id} refused: completed\n"
    assert snapshot(database_url) == before


def test_resuming_a_run_not_waiting_on_an_undo_says_so_and_exits_zero(database_url: str, tmp_path: Path) -> None:
    run_id = submit(database_url, tmp_path)
    before = snapshot(database_url)
    result = run(database_url, tmp_path, "runs", "resume", run_id)
    assert result.code == 0, result.stderr
    assert result.stdout == f"{run_id} not waiting on an undo\n"
    assert snapshot(database_url) == before
