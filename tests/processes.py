"""Daemons as real processes: started with the CLI, stopped with signals, read through their metrics."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio

from sagad.endpoint import announced, answer

REPO = Path(__file__).parents[1]


def sagad(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one ``sagad`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sagad", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


class Daemon:
    """``sagad run`` in a child process, logging to a file."""

    def __init__(self, database_url: str, worker: str, log_dir: Path, *options: str) -> None:
        self.worker = worker
        self.log = log_dir / f"{worker}.log"
        self._command = [
            sys.executable,
            "-m",
            "sagad",
            "run",
            "--database-url",
            database_url,
            "--worker-id",
            worker,
            "--metrics-addr",
            "127.0.0.1:0",
            "--poll-seconds",
            "0.05",
            *options,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self

    async def endpoint_url(self, seconds: float = 20) -> str:
        """Wait until the daemon announces its endpoint; the ``http://HOST:PORT`` it bound."""
        with anyio.fail_after(seconds):
            while (url := announced(self.log.read_text(errors="replace"))) is None:
                self._assert_running()
                await anyio.sleep(0.05)
        return url

    async def metrics_url(self, seconds: float = 20) -> str:
        return f"{await self.endpoint_url(seconds)}/metrics"

    async def ready(self, seconds: float = 30) -> None:
        """Wait until the daemon answers /readyz with 200: migrated, connected, and its claims go through."""
        with anyio.fail_after(seconds):
            readyz = f"{await self.endpoint_url(seconds)}/readyz"
            while await anyio.to_thread.run_sync(answer, readyz) != 200:
                self._assert_running()
                await anyio.sleep(0.05)

    def _assert_running(self) -> None:
        assert self.process is not None, f"{self.worker} was never started"
        assert self.process.poll() is None, f"{self.worker} exited:\n{self.log.read_text(errors='replace')}"

    async def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` the daemon exports now."""
        url = await self.metrics_url()
        body = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
        return sum(float(value) for value in pattern.findall(body))

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def stop(self, seconds: float = 30) -> int:
        """SIGTERM once the daemon watches for it (it has announced its endpoint), then its exit code.

        Sent sooner, while Python still imports, SIGTERM ends it by the default action, as any program starting."""
        await self.endpoint_url()
        self.signal(signal.SIGTERM)
        return await self.wait(seconds)

    async def wait(self, seconds: float = 30) -> int:
        """The exit code; a daemon still running after ``seconds`` fails the test with its log's end."""
        assert self.process is not None
        deadline = anyio.current_time() + seconds
        while (code := self.process.poll()) is None:
            if anyio.current_time() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise TimeoutError(f"{self.worker} still runs after {seconds}s:\n{tail}")
            await anyio.sleep(0.05)
        return code

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
