"""The messages actors pass: work travels forward, failures travel backward."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sagad.domain.runs import Lease
from sagad.domain.steps import Step


class HasLease(Protocol):
    """Anything that stands for a held run."""

    @property
    def lease(self) -> Lease: ...


@dataclass(frozen=True, slots=True)
class StepWork:
    """A held run, on its way to its next step."""

    lease: Lease
    brief: Any
    """As submitted (JSON text, as stored) until the first step has run; then its output, the normalized brief."""
    outputs: Mapping[Step, Any] = field(default_factory=dict)
    """The outputs of the steps it has passed."""


@dataclass(frozen=True, slots=True)
class Compensation:
    """A run that failed for good, collecting on its way back the tables that hold its rows."""

    lease: Lease
    failed_step: Step
    reason: str
    brief: Any = None
    outputs: Mapping[Step, Any] = field(default_factory=dict)
    undo_failed_step: bool = True
    """Whether the failed step's own undo runs too: its call may have had an effect (it timed out, say)."""
    tables: frozenset[str] = frozenset()

    def including(self, tables: frozenset[str]) -> Compensation:
        return replace(self, tables=self.tables | tables)
