"""The ``sagad`` command line, run as a user runs it: bad input gives one clear line and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy.engine import make_url

from sagad.content.brief import MAX_BRIEF_BYTES
from sagad.store import migrate
from sagad.store.db import Database
from tests.helpers import TABLES, rows_per_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "s3cretpw"
REFUSED_URL = "postgresql://nobody@127.0.0.1:1/none"
MYSQL_URL = "mysql://x@y/z"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def one_error_line(self) -> str:
        """The single ``sagad: `` line the command printed on stderr (asserting there is exactly one)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("sagad: "), self.stderr
        return lines[0]


def sagad(*args: str, cwd: Path, stdin: bytes | None = None, timeout: float = 60) -> Result:
    """Run the ``sagad`` command line in a child process, with no SAGAD_* settings inherited."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SAGAD_")}
    done = subprocess.run(
        [sys.executable, "-m", "sagad", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )
    return Result(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )


async def _counts(url: str) -> dict[str, int]:
    db = await Database.connect(url, max_size=1)
    try:
        counts = await rows_per_table(db)
        counts["workflow_runs"] = int((await db.fetch("SELECT count(*) FROM workflow_runs"))[0][0])
        return counts
    finally:
        await db.close()


def row_counts(url: str) -> dict[str, int]:
    """Rows in workflow_runs and in every business table."""
    return anyio.run(_counts, url)


def nothing_written(url: str) -> bool:
    return row_counts(url) == dict.fromkeys([*TABLES, "workflow_runs"], 0)


async def _fetch(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    db = await Database.connect(url, max_size=1)
    try:
        return [dict(row) for row in await db.fetch(query, *args)]
    finally:
        await db.close()


def fetch(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    return anyio.run(_fetch, url, query, *args)


def example(name: str = "brief.json", **changes: Any) -> dict[str, Any]:
    brief: dict[str, Any] = json.loads((EXAMPLES / name).read_bytes())
    brief.update(changes)
    return brief


def without(field: str) -> dict[str, Any]:
    brief = example()
    del brief[field]
    return brief


def as_bytes(brief: Any) -> bytes:
    return json.dumps(brief).encode()


MALFORMED: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "malformed JSON": (b'{\n  "client": "Acme",\n  oops\n}', ("not valid JSON", "line 3 column 3")),
    "empty file": (b"", ("not valid JSON", "line 1 column 1")),
    "JSON array": (b"[1, 2, 3]", ("JSON object",)),
    "missing field": (as_bytes(without("product")), ("'product'", "required")),
    "wrong type": (as_bytes(example(budget_eur="12000")), ("'budget_eur'", "integer")),
    "bool for int": (as_bytes(example(word_limit=True)), ("'word_limit'",)),
    "unknown field": (as_bytes(example(colour="red")), ("'colour'", "not permitted")),
    "nested field": (as_bytes(example(delivery={"target": "fax", "destination": "x"})), ("'delivery.target'",)),
    "list item": (as_bytes(example(channels=["email", 7])), ("'channels[1]'",)),
    "oversized": (as_bytes(example()) + b" " * MAX_BRIEF_BYTES, (str(MAX_BRIEF_BYTES), "limit")),
    "non-UTF-8": (b'{"client": "Caf\xe9"}', ("UTF-8", "0xe9", "offset 15")),
    "deep nesting": (b"[" * 30_000 + b"]" * 30_000, ("nested too deeply",)),
    "example brief_invalid.json": (
        (EXAMPLES / "brief_invalid.json").read_bytes(),
        ("'budget_eur'", "'delivery.target'"),
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_submit_of_a_malformed_file_fails_with_one_line_and_writes_nothing(
    case: str, database_url: str, tmp_path: Path
) -> None:
    data, expected = MALFORMED[case]
    path = tmp_path / "brief.json"
    path.write_bytes(data)
    result = sagad("submit", str(path), "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    line = result.one_error_line()
    assert line.startswith("sagad: invalid brief: ")
    for part in expected:
        assert part in line
    assert result.stdout == ""
    assert nothing_written(database_url)


@pytest.mark.parametrize("case", ["malformed JSON", "non-UTF-8", "missing field", "oversized"])
def test_submit_of_malformed_standard_input_fails_with_one_line_and_writes_nothing(
    case: str, database_url: str, tmp_path: Path
) -> None:
    data, expected = MALFORMED[case]
    result = sagad("submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=data)
    assert result.code != 0
    line = result.one_error_line()
    for part in expected:
        assert part in line
    assert nothing_written(database_url)


def test_submit_of_a_nonexistent_file_names_it_and_writes_nothing(database_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-brief.json"
    result = sagad("submit", str(missing), "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    line = result.one_error_line()
    assert str(missing) in line
    assert "No such file" in line
    assert nothing_written(database_url)


def test_submit_of_a_directory_fails_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = sagad("submit", str(tmp_path), "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    assert "cannot read the brief" in result.one_error_line()
    assert nothing_written(database_url)


def test_submit_of_an_integer_with_too_many_digits_fails_with_one_line(database_url: str, tmp_path: Path) -> None:
    huge = b'{"budget_eur": ' + b"9" * 5000 + b"}"
    result = sagad("submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=huge)
    assert result.code != 0
    assert result.one_error_line().startswith("sagad: invalid brief: brief is not valid JSON: ")
    assert nothing_written(database_url)


def test_submit_of_a_nul_character_is_an_invalid_brief_naming_the_field(database_url: str, tmp_path: Path) -> None:
    result = sagad(
        "submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=as_bytes(example(client="Acme\x00"))
    )
    assert result.code != 0
    line = result.one_error_line()
    assert line.startswith("sagad: invalid brief: ")
    assert "'client'" in line
    assert nothing_written(database_url)


def test_submit_of_a_valid_brief_prints_its_run_id_and_creates_one_pending_run(
    database_url: str, tmp_path: Path
) -> None:
    result = sagad("submit", str(EXAMPLES / "brief.json"), "--database-url", database_url, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    run_id = uuid.UUID(result.stdout.strip())
    assert result.stdout == f"{run_id}\n"
    runs = fetch(database_url, "SELECT id, status, brief, idempotency_key FROM workflow_runs")
    assert runs == [{"id": run_id, "status": "pending", "brief": example(), "idempotency_key": None}]
    counts = row_counts(database_url)
    assert counts.pop("workflow_runs") == 1
    assert set(counts.values()) == {0}


def test_submit_from_standard_input_creates_the_run(database_url: str, tmp_path: Path) -> None:
    result = sagad("submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=as_bytes(example()))
    assert result.code == 0, result.stderr
    run_id = uuid.UUID(result.stdout.strip())
    assert fetch(database_url, "SELECT status FROM workflow_runs WHERE id = $1", run_id) == [{"status": "pending"}]


def test_submit_twice_with_one_idempotency_key_returns_the_first_run(database_url: str, tmp_path: Path) -> None:
    args = ("submit", str(EXAMPLES / "brief.json"), "--idempotency-key", "order-42", "--database-url", database_url)
    first, second = sagad(*args, cwd=tmp_path), sagad(*args, cwd=tmp_path)
    assert first.code == second.code == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    run_id = uuid.UUID(first.stdout.strip())
    assert fetch(database_url, "SELECT id, idempotency_key FROM workflow_runs") == [
        {"id": run_id, "idempotency_key": "order-42"}
    ]
    other = sagad(*args[:3], "order-43", *args[4:], cwd=tmp_path)
    assert uuid.UUID(other.stdout.strip()) != run_id
    assert row_counts(database_url)["workflow_runs"] == 2


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_submit_with_an_unusable_idempotency_key_fails_naming_the_option(
    key: str, database_url: str, tmp_path: Path
) -> None:
    result = sagad(
        "submit", str(EXAMPLES / "brief.json"), "--idempotency-key", key, "--database-url", database_url, cwd=tmp_path
    )
    assert result.code != 0
    assert "--idempotency-key" in result.one_error_line()
    assert nothing_written(database_url)


def test_status_of_a_submitted_run_prints_it_as_json(database_url: str, tmp_path: Path) -> None:
    submitted = sagad("submit", str(EXAMPLES / "brief.json"), "--database-url", database_url, cwd=tmp_path)
    run_id = submitted.stdout.strip()
    result = sagad("status", run_id, "--database-url", database_url, cwd=tmp_path)
    assert result.code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["run_id"] == run_id
    assert status["status"] == "pending"
    assert status["current_step"] == "normalize_brief"
    assert status["attempts"] == 0
    assert status["last_error"] is None


def test_status_of_a_non_uuid_fails_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = sagad("status", "not-a-run", "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    line = result.one_error_line()
    assert "'not-a-run'" in line
    assert "UUID" in line


def test_status_of_an_unknown_run_fails_with_one_line(database_url: str, tmp_path: Path) -> None:
    unknown = uuid.uuid4()
    result = sagad("status", str(unknown), "--database-url", database_url, cwd=tmp_path)
    assert result.code != 0
    assert result.one_error_line() == f"sagad: no run {unknown}"
    assert result.stdout == ""


COMMANDS = {
    "submit": ("submit", str(EXAMPLES / "brief.json")),
    "status": ("status", "00000000-0000-0000-0000-000000000000"),
    "audit": ("audit",),
}
UNUSABLE_DATABASES = {
    "refused": "cannot connect",
    "mysql": "not a postgresql:// URL",
    "unmigrated": "sagad migrate",
}


@pytest.mark.parametrize("database", list(UNUSABLE_DATABASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unusable_database_fails_with_one_line_and_exit_1(
    command: str, database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = {"refused": REFUSED_URL, "mysql": MYSQL_URL}.get(database) or request.getfixturevalue("empty_database_url")
    result = sagad(*COMMANDS[command], "--database-url", url, cwd=tmp_path)
    assert result.code == 1
    assert UNUSABLE_DATABASES[database] in result.one_error_line()
    assert result.stdout == ""
    if database == "unmigrated":
        tables = fetch(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert tables == [], "a command other than migrate created tables"


@pytest.mark.parametrize("command", [*COMMANDS, "migrate"])
def test_database_password_never_appears_in_error_output(command: str, tmp_path: Path) -> None:
    args = COMMANDS.get(command, ("migrate",))
    result = sagad(*args, "--database-url", f"postgresql://someone:{PASSWORD}@127.0.0.1:1/none", cwd=tmp_path)
    assert result.code == 1
    assert "cannot connect" in result.one_error_line() or "migration failed" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [*COMMANDS, "migrate"])
def test_unknown_database_role_fails_with_one_line_without_the_password(
    command: str, database_url: str, tmp_path: Path
) -> None:
    url = make_url(database_url).set(username="sagad_no_such_role", password=PASSWORD)
    args = COMMANDS.get(command, ("migrate",))
    result = sagad(*args, "--database-url", url.render_as_string(hide_password=False), cwd=tmp_path)
    assert result.code == 1
    line = result.one_error_line()
    assert "sagad_no_such_role" in line
    assert PASSWORD not in result.stderr
    assert nothing_written(database_url)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--metrics-addr", "nonsense"),
        ("--metrics-addr", "127.0.0.1:99999"),
        ("--metrics-addr", ":9464"),
        ("--lease-seconds", "-1"),
        ("--lease-seconds", "soon"),
        ("--max-inflight", "0"),
        ("--log-level", "loud"),
        ("--max-connections", "2"),
        ("--max-connections", "many"),
        ("--pooler", "sometimes"),
        ("--direct-url", "mysql://someone@127.0.0.1/db"),
    ],
)
def test_run_with_a_bad_option_exits_naming_the_option(
    option: str, value: str, database_url: str, tmp_path: Path
) -> None:
    result = sagad("run", option, value, "--database-url", database_url, cwd=tmp_path, timeout=30)
    assert result.code != 0
    assert option in result.stderr
    assert "Traceback" not in result.stderr
    assert row_counts(database_url)["workflow_runs"] == 0


def test_migrate_on_an_empty_database_succeeds_and_is_idempotent(empty_database_url: str, tmp_path: Path) -> None:
    head = migrate.head_revision()
    for _ in range(2):
        result = sagad("migrate", "--database-url", empty_database_url, cwd=tmp_path)
        assert result.code == 0, result.stderr
        assert result.stdout == f"database migrated to {head}\n"
    assert fetch(empty_database_url, "SELECT version_num FROM alembic_version") == [{"version_num": head}]
    assert nothing_written(empty_database_url)
    audit = sagad("audit", "--database-url", empty_database_url, cwd=tmp_path)
    assert audit.code == 0, audit.stderr
    assert "audit clean" in audit.stdout
