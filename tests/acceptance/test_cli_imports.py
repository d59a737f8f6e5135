"""A command imports only what it uses: the light ones load no daemon, HTTP client or migration machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"

HEAVY = (
    "aiohttp",
    "alembic",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "prometheus_client",
    "sagad.content.pipeline",
    "sagad.supervisor",
    "sagad.actors",
    "sagad.metrics",
    "sagad.endpoint",
    "matplotlib",
)

# Runs the command in this interpreter, then prints which modules it loaded (also when it exits).
_PROBE = """
import json, sys
from sagad.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60, check=False
    )
    [line] = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


def heavy_in(modules: set[str]) -> set[str]:
    return {m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")}


def test_help_loads_nothing_heavy() -> None:
    assert heavy_in(loaded_by("--help")) == set()


@pytest.mark.parametrize(
    "args", [("submit", str(EXAMPLES / "brief.json")), ("runs", "list"), ("runs", "list", "--count")]
)
def test_submit_and_runs_list_load_nothing_heavy(database_url: str, args: tuple[str, ...]) -> None:
    assert heavy_in(loaded_by(*args, "--database-url", database_url)) == set()


def test_the_probe_sees_a_heavy_command_load_its_modules(database_url: str) -> None:
    # The daemon's help imports the daemon: what the list above would catch if a light command did.
    assert "sagad.supervisor" in loaded_by("run", "--help")
