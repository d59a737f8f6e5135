"""The messages actors pass: work travels forward, failures travel backward."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sagad.domain.pipeline import brief_after
from sagad.domain.rows import Undone
from sagad.domain.runs import Lease
from sagad.domain.steps import Step

_FIRST_STEP = Step.NORMALIZE_BRIEF


class HasLease(Protocol):
    """Anything that stands for a held run."""

    @property
    def lease(self) -> Lease: ...


@dataclass(frozen=True, slots=True)
class StepWork:
    """A held run, on its way to its next step."""

    lease: Lease
    submitted: Any
    """The brief as submitted (JSON text, as stored); let go of once the first step has run."""
    outputs: Mapping[Step, Any] = field(default_factory=dict)
    """The outputs of the steps it has passed."""

    @property
    def brief(self) -> Any:
        """The brief its next step gets (``brief_after``); ValueError if the submitted text cannot be read."""
        return brief_after(self.submitted, self.outputs)

    def after(self, step: Step, output: Any) -> StepWork:
        """The run once ``step`` has handed on ``output``."""
        submitted = None if step is _FIRST_STEP else self.submitted  # the brief now is the first step's output
        return StepWork(self.lease, submitted, {**self.outputs, step: output})


@dataclass(frozen=True, slots=True)
class Compensation:
    """A run that failed for good, collecting on its way back the tables that hold its rows."""

    lease: Lease
    failed_step: Step
    reason: str
    submitted: Any = None
    """The brief as submitted, while the first step has not run (as ``StepWork.submitted``)."""
    outputs: Mapping[Step, Any] = field(default_factory=dict)
    undo_failed_step: bool = True
    """Whether the failed step's own undo runs too: its call may have had an effect (it timed out, say)."""
    tables: frozenset[str] = frozenset()
    undone: tuple[Undone, ...] = ()
    """What the undos of the steps it passed came to, for the run's history."""

    @property
    def brief(self) -> Any:
        """The brief the undos get; ValueError if the submitted text cannot be read."""
        return brief_after(self.submitted, self.outputs)

    def including(self, tables: frozenset[str], undone: Undone | None = None) -> Compensation:
        """The failure once a step has added its tables (and, if it took anything back, what its undo came to)."""
        if undone is None:
            return replace(self, tables=self.tables | tables)
        return replace(self, tables=self.tables | tables, undone=(*self.undone, undone))
