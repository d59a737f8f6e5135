"""The delivery receiver as a real process: started, stopped (SIGTERM or SIGKILL), restarted on its port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.processes import REPO

LISTENING = re.compile(r"receiver listening on (http://\S+)")


class ReceiverProcess:
    """``python -m sagad.loadtest.receiver`` on one journal; a restart keeps its port and journal."""

    def __init__(self, journal: Path, *options: str) -> None:
        self.journal = journal
        self.options = options
        self.log = journal.with_suffix(".log")
        self.port = 0
        self.url = ""
        self.listening_line = ""
        self.process: Process | None = None

    async def start(self, seconds: float = 20) -> str:
        """Start it (on the port it had, if any) and wait for the line saying where it listens; the URL."""
        command = [sys.executable, "-m", "sagad.loadtest.receiver", "--journal", str(self.journal)]
        command += ["--port", str(self.port), *self.options]
        with self.log.open("ab") as log:
            self.process = await anyio.open_process(command, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        assert self.process.stdout is not None
        with anyio.fail_after(seconds):
            try:
                line = await BufferedByteReceiveStream(self.process.stdout).receive_until(b"\n", 1000)
            except anyio.IncompleteRead:
                raise AssertionError(f"the receiver exited:\n{self.log.read_text()}") from None
        self.listening_line = line.decode()
        found = LISTENING.fullmatch(self.listening_line)
        assert found, self.listening_line
        self.url = found[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    async def stop(self, signum: signal.Signals = signal.SIGTERM, seconds: float = 20) -> int:
        """Send ``signum`` and wait for the exit; its return code."""
        process = self.process
        assert process is not None, "the receiver is not running"
        if process.returncode is None:
            process.send_signal(signum)
        with anyio.fail_after(seconds):
            code = await process.wait()
        await process.aclose()
        self.process = None
        return code

    async def kill(self) -> int:
        return await self.stop(signal.SIGKILL)

    async def restart(self, signum: signal.Signals = signal.SIGTERM) -> str:
        """Stop it with ``signum`` and start it again on the same port and journal."""
        await self.stop(signum)
        return await self.start()

    async def __aenter__(self) -> ReceiverProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            with anyio.CancelScope(shield=True):
                await self.kill()
