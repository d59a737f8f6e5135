"""sagad: a saga pipeline daemon on PostgreSQL.

What a team imports is re-exported here and listed in ``__all__``: the step contract, the pipeline
declaration and the errors a step raises. Nothing else is promised.

The repository root is this package: ``actors/`` is ``sagad.actors``, ``supervisor.py`` is
``sagad.supervisor``, and so on (see ``[tool.setuptools.package-dir]`` in ``pyproject.toml``).
"""

from sagad.domain.pipeline import (
    Pipeline,
    RetryPolicy,
    StepCall,
    StepContext,
    StepResult,
    StepSpec,
    Undo,
    UndoContext,
)
from sagad.domain.steps import Step
from sagad.errors import SagadError, StepFailed, TransientStepError

__all__ = [
    "Pipeline",
    "RetryPolicy",
    "SagadError",
    "Step",
    "StepCall",
    "StepContext",
    "StepFailed",
    "StepResult",
    "StepSpec",
    "TransientStepError",
    "Undo",
    "UndoContext",
]
