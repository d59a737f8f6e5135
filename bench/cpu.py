"""CPU seconds of a daemon and of a local PostgreSQL server's processes, read from /proc.

A server's CPU is its postmaster's own, its live children's (backends, checkpointer, WAL writer,
autovacuum workers...) and its exited children's (the postmaster's ``cutime`` and ``cstime``, which
the kernel adds when it reaps them), so a short-lived process is counted too. Only a server on
this machine (and in this PID namespace) can be read; elsewhere the figures are unavailable.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (the state is [0]), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, with_exited_children: bool = False) -> float:
    """User and system time of ``pid`` so far (0 when it is gone)."""
    fields = _fields(pid)
    if fields is None:
        return 0.0
    used = int(fields[11]) + int(fields[12])  # utime, stime
    if with_exited_children:
        used += int(fields[13]) + int(fields[14])  # cutime, cstime
    return used / _TICKS


def parent_of(pid: int) -> int | None:
    fields = _fields(pid)
    return None if fields is None else int(fields[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: look at every process
        return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and parent_of(int(p.name)) == pid]


def _serves(pid: int, database: str) -> bool:
    """Whether the process title of server process ``pid`` names ``database`` (a backend connected to it)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return database in title.split()


@dataclass(frozen=True, slots=True)
class Server:
    """A PostgreSQL server on this machine, known by its postmaster."""

    postmaster: int

    @classmethod
    def of_backend(cls, backend_pid: int) -> Server | None:
        """The server of a backend (``pg_backend_pid()``), or None when its processes cannot be read here."""
        postmaster = parent_of(backend_pid)
        return None if postmaster is None else cls(postmaster)

    def cpu_seconds(self, database: str) -> tuple[float, float]:
        """CPU seconds so far of all the server's processes, and of the backends connected to ``database``."""
        total = cpu_seconds(self.postmaster, with_exited_children=True)
        own = 0.0
        for child in _children(self.postmaster):
            used = cpu_seconds(child)
            total += used
            if _serves(child, database):
                own += used
        return total, own


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative CPU seconds at a moment (``time.time()``)."""

    at: float
    daemon: float
    server: float
    database: float


def take_sample(at: float, daemon: int, server: Server | None, database: str) -> Sample:
    total, own = server.cpu_seconds(database) if server else (float("nan"), float("nan"))
    return Sample(at, cpu_seconds(daemon), total, own)


def _at(samples: list[Sample], moment: float) -> Sample:
    """The counters at ``moment``, interpolated between the samples around it."""
    index = bisect.bisect_left([s.at for s in samples], moment)
    if index <= 0:
        return samples[0]
    if index >= len(samples):
        return samples[-1]
    before, after = samples[index - 1], samples[index]
    share = (moment - before.at) / (after.at - before.at)

    def between(a: float, b: float) -> float:
        return a + (b - a) * share

    return Sample(
        moment,
        between(before.daemon, after.daemon),
        between(before.server, after.server),
        between(before.database, after.database),
    )


def used_between(samples: list[Sample], start: float, end: float) -> Sample:
    """CPU seconds used from ``start`` to ``end`` (``at`` holds the seconds elapsed)."""
    first, last = _at(samples, start), _at(samples, end)
    return Sample(end - start, last.daemon - first.daemon, last.server - first.server, last.database - first.database)
