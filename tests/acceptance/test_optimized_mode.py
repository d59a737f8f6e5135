"""sagad behaves the same under ``python -O``, which strips assert statements: no runtime check is one."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

from tests.acceptance.test_cli_input import EXAMPLES, Result, fetch
from tests.security.cli import environment

REPO = Path(__file__).resolve().parents[2]


def optimized(*args: str, cwd: Path) -> Result:
    """Run ``python -O -m sagad ARGS`` to completion."""
    done = subprocess.run(
        [sys.executable, "-O", "-m", "sagad", *args],
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env=environment(),
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def _shipped_modules() -> list[Path]:
    """Every module the wheel installs: the packages pyproject.toml declares, mapped onto the repository."""
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = [REPO.joinpath(*package.split(".")[1:]) for package in packages]
    return sorted(module for folder in folders for module in folder.glob("*.py"))


def test_no_shipped_module_checks_anything_with_assert() -> None:
    found = [
        f"{module.relative_to(REPO)}:{node.lineno}"
        for module in _shipped_modules()
        for node in ast.walk(ast.parse(module.read_text(), str(module)))
        if isinstance(node, ast.Assert)
    ]
    assert len(_shipped_modules()) > 40
    assert found == []


def test_help_migrate_submit_twice_with_one_key_and_status_work_under_python_o(
    empty_database_url: str, tmp_path: Path
) -> None:
    usage = optimized("--help", cwd=tmp_path)
    assert usage.code == 0, usage.stderr
    assert "Usage: sagad [OPTIONS] COMMAND" in usage.stdout
    migrated = optimized("migrate", "--database-url", empty_database_url, cwd=tmp_path)
    assert migrated.code == 0, migrated.stderr
    assert migrated.stdout.startswith("database migrated to ")

    submit = ("submit", str(EXAMPLES / "brief.json"), "--idempotency-key", "order-7", "--database-url")
    first, again = (optimized(*submit, empty_database_url, cwd=tmp_path) for _ in range(2))
    assert first.code == again.code == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout
    run_id = uuid.UUID(first.stdout.strip())
    assert fetch(empty_database_url, "SELECT id FROM workflow_runs") == [{"id": run_id}]

    status = optimized("status", str(run_id), "--database-url", empty_database_url, cwd=tmp_path)
    assert status.code == 0, status.stderr
    assert '"status": "pending"' in status.stdout


def test_the_demo_ends_every_example_as_documented_under_python_o(database_url: str, tmp_path: Path) -> None:
    demo = optimized("demo", "--examples", str(EXAMPLES), "--database-url", database_url, cwd=tmp_path)
    assert demo.code == 0, demo.stderr
    endings = {line.split()[0]: line for line in demo.stdout.splitlines()}
    assert " completed" in endings["brief.json"]
    assert " compensated: qc_evaluate: " in endings["brief_qc_fail.json"]
    assert " compensated: deliver: " in endings["brief_delivery_fail.json"]
    assert "rejected at submit" in endings["brief_invalid.json"]
