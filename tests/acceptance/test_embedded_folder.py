"""Without --database-url every command uses the embedded server's folder; when that folder cannot be made,
each command ends with one line naming it, and no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.acceptance.test_cli_input import EXAMPLES, sagad

COMMANDS = {
    "migrate": ("migrate",),
    "submit": ("submit", str(EXAMPLES / "brief.json")),
    "status": ("status", "00000000-0000-0000-0000-000000000000"),
    "audit": ("audit",),
    "run": ("run", "--metrics-addr", "127.0.0.1:0"),
    "demo": ("demo", "--examples", str(EXAMPLES)),
    "loadtest": ("loadtest", "--runs", "1", "--daemons", "0"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_file_where_the_embedded_folder_goes_ends_every_command_with_one_line_naming_it(
    command: str, tmp_path: Path
) -> None:
    (tmp_path / ".sagad").write_text("not a folder")
    result = sagad(*COMMANDS[command], cwd=tmp_path)
    assert result.code == 1, result.stderr
    line = result.one_error_line()
    assert f"cannot create the embedded PostgreSQL's folder {tmp_path / '.sagad'}" in line
    assert result.stdout == ""


def test_a_read_only_folder_ends_the_command_with_one_line_naming_the_embedded_folder(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.access(read_only, os.W_OK):  # root writes anyway, and would start a server there
        pytest.skip("this user can write to a read-only folder")
    result = sagad("migrate", cwd=read_only)
    assert result.code == 1
    line = result.one_error_line()
    assert str(read_only / ".sagad") in line
    assert "Permission denied" in line


def test_a_load_test_on_a_given_database_names_the_log_folder_it_cannot_make(database_url: str, tmp_path: Path) -> None:
    (tmp_path / ".sagad").write_text("not a folder")
    result = sagad("loadtest", "--runs", "1", "--database-url", database_url, cwd=tmp_path)
    assert result.code == 1, result.stderr
    assert f"{tmp_path / '.sagad'}" in result.one_error_line()
