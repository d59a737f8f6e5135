"""The messages actors pass: work travels forward, failures travel backward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sagad.domain.runs import Lease
from sagad.domain.steps import Step


class HasLease(Protocol):
    """Anything that stands for a held run."""

    @property
    def lease(self) -> Lease: ...


@dataclass(frozen=True, slots=True)
class StepWork:
    """A held run, on its way to the next step."""

    lease: Lease
    brief: Any
    """The brief: as stored (decoded JSON) when claimed, a normalized ``Brief`` once validated."""


@dataclass(frozen=True, slots=True)
class Compensation:
    """A run that failed for good, collecting on its way back the tables that hold its rows."""

    lease: Lease
    failed_step: Step
    reason: str
    tables: frozenset[str] = frozenset()

    def including(self, tables: frozenset[str]) -> Compensation:
        return Compensation(self.lease, self.failed_step, self.reason, self.tables | tables)
