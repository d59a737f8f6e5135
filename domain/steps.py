"""The pipeline's steps, in order, and the business tables each one writes.

This is the one declaration of the pipeline's shape: the store's step index, the schema's
table ownership, the metric labels, the actors and the tests all derive from it.
"""

from __future__ import annotations

from enum import Enum
from functools import total_ordering


@total_ordering
class Step(Enum):
    """A step of the pipeline; members are in pipeline order and compare by it."""

    NORMALIZE_BRIEF = "normalize_brief"
    GENERATE_STRATEGY = "generate_strategy"
    GENERATE_DRAFT = "generate_draft"
    QC_EVALUATE = "qc_evaluate"
    DELIVER = "deliver"

    # Members are singletons: identity is equality, and hashing by identity is done in C (Enum's own
    # __hash__ is Python code, and steps key the outputs every call of every run looks up).
    __hash__ = object.__hash__

    def __str__(self) -> str:
        return self.value

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return self.index < other.index

    @property
    def index(self) -> int:
        """The step's position; ``workflow_runs.next_step`` stores it."""
        return _INDEX[self]

    @classmethod
    def at(cls, index: int) -> Step:
        """The step at ``index`` (IndexError past the last)."""
        return _ORDER[index]

    @property
    def is_last(self) -> bool:
        return self is _ORDER[-1]

    @property
    def tables(self) -> tuple[str, ...]:
        """The business tables this step writes, parents before children."""
        return _TABLES[self]


_ORDER: tuple[Step, ...] = tuple(Step)
_INDEX = {step: index for index, step in enumerate(_ORDER)}
_TABLES: dict[Step, tuple[str, ...]] = {
    Step.NORMALIZE_BRIEF: ("onboarding_brief", "onboarding_intake"),
    Step.GENERATE_STRATEGY: ("strategy_document",),
    Step.GENERATE_DRAFT: ("production_drafts", "production_bundles", "production_bundle_assets"),
    Step.QC_EVALUATE: ("qc_results", "qc_issues"),
    Step.DELIVER: ("delivery_packages", "delivery_artifacts"),
}

STEP_NAMES: tuple[str, ...] = tuple(step.value for step in Step)
BUSINESS_TABLES: tuple[str, ...] = tuple(table for step in Step for table in step.tables)
"""Every business table, in pipeline order."""


def step_of_table(table: str) -> Step:
    """The step that writes ``table`` (KeyError for a table no step writes)."""
    return _OWNER[table]


_OWNER = {table: step for step in Step for table in step.tables}
