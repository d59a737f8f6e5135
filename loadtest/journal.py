"""The receiver's journal: every request it answered, one JSON line each, and what they add up to.

The journal is the truth about deliveries: a key is accepted when a line saying so is in the file,
and a receiver started on an existing journal replays it first, so a restart forgets nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Method = Literal["POST", "DELETE"]

ACCEPTED = 201
RECOGNISED = 200
RETRACTED = 204


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One request and the status it was answered with; ``key`` is None when the request had none."""

    at: float
    method: Method
    path: str
    key: str | None
    status: int
    client_gone: bool = False

    def to_line(self) -> str:
        return json.dumps(
            {
                "at": self.at,
                "method": self.method,
                "path": self.path,
                "key": self.key,
                "status": self.status,
                "client_gone": self.client_gone,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> JournalEntry:
        data = json.loads(line)
        return cls(
            at=float(data["at"]),
            method=data["method"],
            path=str(data["path"]),
            key=data["key"],
            status=int(data["status"]),
            client_gone=bool(data.get("client_gone", False)),
        )


@dataclass(frozen=True, slots=True)
class JournalSummary:
    """What a journal adds up to: keys accepted (with how often, which must be once), retracted, statuses."""

    accepted: dict[str, int]
    recognised: dict[str, int]
    retracted: list[str]
    requests_by_status: dict[int, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "recognised": self.recognised,
            "retracted": self.retracted,
            "requests_by_status": {str(status): n for status, n in sorted(self.requests_by_status.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalSummary:
        return cls(
            accepted={str(k): int(n) for k, n in data["accepted"].items()},
            recognised={str(k): int(n) for k, n in data["recognised"].items()},
            retracted=[str(k) for k in data["retracted"]],
            requests_by_status={int(s): int(n) for s, n in data["requests_by_status"].items()},
        )


@dataclass(slots=True)
class Deliveries:
    """The keys' state, folded from journal entries; the live receiver and ``read_journal`` share it."""

    accepted_at: dict[str, float] = field(default_factory=dict)
    accept_counts: Counter[str] = field(default_factory=Counter)
    recognised: Counter[str] = field(default_factory=Counter)
    retracted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)

    def apply(self, entry: JournalEntry) -> None:
        self.statuses[entry.status] += 1
        if entry.key is None:
            return
        if entry.method == "POST" and entry.status == ACCEPTED:
            self.accepted_at.setdefault(entry.key, entry.at)
            self.accept_counts[entry.key] += 1
        elif entry.method == "POST" and entry.status == RECOGNISED:
            self.recognised[entry.key] += 1
        elif entry.method == "DELETE" and entry.status == RETRACTED:
            self.retracted.add(entry.key)

    def summary(self) -> JournalSummary:
        return JournalSummary(
            accepted=dict(sorted(self.accept_counts.items())),
            recognised=dict(sorted(self.recognised.items())),
            retracted=sorted(self.retracted),
            requests_by_status=dict(sorted(self.statuses.items())),
        )


def _complete_lines(path: Path) -> tuple[list[JournalEntry], int]:
    """The entries of whole lines, and the length of the file up to its last newline.

    A line without its newline was being written when the process died: it was never answered,
    so it is not part of the journal.
    """
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode().splitlines()
    return [JournalEntry.from_line(line) for line in lines if line.strip()], end


def read_entries(path: Path) -> list[JournalEntry]:
    """Every answered request in a journal file, in the order answered."""
    return _complete_lines(path)[0]


def read_journal(path: Path) -> JournalSummary:
    """The summary of a journal file, e.g. of a receiver that has stopped."""
    deliveries = Deliveries()
    for entry in read_entries(path):
        deliveries.apply(entry)
    return deliveries.summary()


class Journal:
    """An append-only journal file: replayed into its deliveries on open, then one flushed line per request."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.deliveries = Deliveries()
        self._file: IO[str] | None = None

    def open(self) -> Journal:
        entries, end = _complete_lines(self.path)
        for entry in entries:
            self.deliveries.apply(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._file.truncate(end)  # drop a torn last line, so the next entry starts a line of its own
        return self

    def record(self, entry: JournalEntry) -> None:
        """Write the entry and hand it to the OS; only then does the state (and so the client) see it."""
        if self._file is None:
            raise RuntimeError("the journal is not open: call open() first")
        self._file.write(entry.to_line() + "\n")
        self._file.flush()
        self.deliveries.apply(entry)

    def sync(self) -> None:
        """Force the written entries to the disk (``fsync``), when the journal was asked to."""
        if self.fsync and self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
