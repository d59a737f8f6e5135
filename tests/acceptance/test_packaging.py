"""The wheel as a user installs it: one top-level name, `sagad`, beside Supervisord's `supervisor`.

One wheel and one virtual environment per session (pip's cache makes the dependencies cheap); the
source is copied first, so that building leaves nothing in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from sagad.store import migrate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".sagad", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.pyc"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path
    """An empty folder to run commands in: nothing of the repository is importable from it."""

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the installed environment, with no setting of this one leaking in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGAD_", "PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
            env=env,
            check=False,
        )


def _checked(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{' '.join(map(str, done.args))}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("packaging")
    source, wheels, venv, workdir = root / "source", root / "wheels", root / "venv", root / "work"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    workdir.mkdir()
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--no-input", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "-w", wheels, source]
    _checked(subprocess.run(build, capture_output=True, text=True, timeout=300, check=False))
    [wheel] = wheels.glob("sagad-*.whl")
    _checked(
        subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True, timeout=120, check=False)
    )
    box = Installed(wheel, venv, workdir)
    _checked(box.run(box.python, "-m", "pip", "--no-input", "--quiet", "install", wheel, "supervisor", timeout=600))
    yield box


def _top_level(paths: list[str]) -> set[str]:
    return {PurePosixPath(path).parts[0] for path in paths}


def test_the_wheel_holds_one_top_level_name_sagad(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/RECORD"))
        record = wheel.read(f"{dist_info}/RECORD").decode().splitlines()
        top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()
    recorded = [line.split(",")[0] for line in record if line]
    assert _top_level(recorded) == _top_level(names) == {"sagad", dist_info}
    assert top_level == ["sagad"]
    assert not [name for name in names if name.startswith(("sagad/tests/", "sagad/bench/", "sagad/examples/"))]


def test_the_installed_distribution_adds_only_sagad_to_site_packages(installed: Installed) -> None:
    listing = "import importlib.metadata as m, json; print(json.dumps([str(f) for f in m.files('sagad')]))"
    files = json.loads(_checked(installed.run(installed.python, "-c", listing)).stdout)
    in_site_packages = [path for path in files if not path.startswith("..")]  # the console script is in bin/
    assert {name for name in _top_level(in_site_packages) if not name.endswith(".dist-info")} == {"sagad"}
    assert "../../../bin/sagad" in files


def test_the_migrations_ship_as_package_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    versions = sorted(path.name for path in (REPO / "migrations" / "versions").glob("*.py"))
    expected = {"alembic.ini", "script.py.mako", "env.py", *(f"versions/{name}" for name in versions)}
    assert {f"sagad/migrations/{name}" for name in expected} <= names
    head = _checked(
        installed.run(installed.python, "-c", "from sagad.store.migrate import head_revision; print(head_revision())")
    )
    assert head.stdout.strip() == migrate.head_revision()


def test_sagad_help_runs_from_the_installed_script_and_as_a_module(installed: Installed) -> None:
    for command in ([installed.venv / "bin" / "sagad"], [installed.python, "-m", "sagad"]):
        done = _checked(installed.run(*command, "--help"))
        assert "Usage: " in done.stdout
        # `status` is kept for scripts as `runs show --json`, and no longer listed.
        for subcommand in ("migrate", "run", "submit", "runs", "intake", "audit", "loadtest", "demo"):
            assert subcommand in done.stdout


def test_supervisord_and_sagad_import_side_by_side(installed: Installed) -> None:
    script = (
        "import json, supervisor, supervisor.supervisord, sagad.store.db, sagad.supervisor;"
        " print(json.dumps([supervisor.__file__, sagad.store.db.__file__, sagad.supervisor.Supervisor.__name__]))"
    )
    theirs, ours, supervisor_class = json.loads(_checked(installed.run(installed.python, "-c", script)).stdout)
    site_packages = str(installed.venv / "lib")
    assert theirs.startswith(site_packages)
    assert theirs.endswith("supervisor/__init__.py")
    assert ours.startswith(site_packages)
    assert ours.endswith("sagad/store/db.py")
    assert supervisor_class == "Supervisor"


def test_the_installed_sagad_migrates_a_database(installed: Installed, empty_database_url: str) -> None:
    done = _checked(installed.run(installed.venv / "bin" / "sagad", "migrate", "--database-url", empty_database_url))
    assert done.stdout == f"database migrated to {migrate.head_revision()}\n"
