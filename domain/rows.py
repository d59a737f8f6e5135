"""Business rows, their keys, and what a step's group commit writes and reports."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sagad.domain.runs import Lease, RunId
from sagad.domain.steps import Step

Row = dict[str, Any]
"""One business row, keyed by column name (server defaults left out)."""

Rows = dict[str, list[Row]]
"""Rows by table name."""


@lru_cache(maxsize=4096)
def _entity_bits(entity: str) -> int:
    return int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=16).digest(), "big")


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown  # an Enum member: a descriptor lookup each time it is named


def row_key(run_id: uuid.UUID, entity: str) -> uuid.UUID:
    """The key of ``entity`` (e.g. ``"asset/email/headline"``) within run ``run_id``.

    The run id XOR a 128-bit hash of the entity name: the same entity of a run always gets the
    same key (so a retried step writes nothing twice), distinct entities of one run distinct keys.
    """
    # What uuid.UUID(int=...) does once it has checked its argument; the XOR of two 128-bit
    # values needs no check, and this is on the hot path (some 75 keys a run), at a fifth of the cost.
    key: uuid.UUID = _new(uuid.UUID)
    _set(key, "int", run_id.int ^ _entity_bits(entity))
    _set(key, "is_safe", _UNKNOWN)
    return key


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One run's part of a step's group commit: its rows and output, or the reason the step failed."""

    lease: Lease
    rows: Rows = field(default_factory=dict)
    output: str = "null"
    """The step's output for later steps, as JSON text, kept with the run so that a resumed run gets it back."""
    failure: str | None = None
    attempts: int = 1
    """The call's attempts, its time (summed) and why it was retried: kept with the output, for the run's history."""
    call_seconds: float = 0.0
    retry_reasons: str | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """What a fenced commit did: the runs it wrote for, and the age of each run (database time)."""

    owned: dict[RunId, float]
    """Runs whose fence held, with seconds since submission at commit."""

    rows: dict[str, int] = field(default_factory=dict)
    """For a compensation, the rows deleted per table (every table it was given, zeros too); empty for a step."""

    skipped: frozenset[RunId] = frozenset()
    """Runs still ours whose row another transaction held: nothing was written for them; try again."""

    cancel_waits: dict[RunId, float] = field(default_factory=dict)
    """For a compensation, each cancelled run it finished, with seconds from its cancel request (database time)."""


@dataclass(frozen=True, slots=True)
class Undone:
    """What one step's undo came to for a run being compensated, kept in the run's history by the compensation."""

    step: Step
    ran: bool
    """False: the step has no undo (nothing outside the database to take back)."""
    attempts: int = 0
    seconds: float = 0.0
    """The attempts' time summed."""
    retry_reasons: str | None = None

    @property
    def outcome(self) -> str:
        return "undone" if self.ran else "no undo"
