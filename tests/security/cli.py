"""The ``sagad`` command line as a child process, with only the SAGAD_* settings a test gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def one_error_line(self) -> str:
        """The single ``sagad: `` line on stderr (asserting there is exactly one, and no traceback)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("sagad: "), self.stderr
        return lines[0]


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without SAGAD_* variables, plus ``settings``; wide help output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SAGAD_")}
    return {**env, "COLUMNS": "200", **settings}


def sagad(*args: str, cwd: Path, stdin: bytes = b"", timeout: float = 60, env: dict[str, str] | None = None) -> Result:
    """Run one ``sagad`` command to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "sagad", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env=env if env is not None else environment(),
        check=False,
    )
    return Result(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )
