"""sagad: a saga pipeline daemon on PostgreSQL.

What a team imports is re-exported here and listed in ``__all__``: the step contract, the pipeline
declaration and the errors a step raises, and the client API. Nothing else is promised. The client's
names load on first use, so that ``import sagad`` (and every ``sagad`` command) costs only what it uses.

The repository root is this package: ``actors/`` is ``sagad.actors``, ``supervisor.py`` is
``sagad.supervisor``, and so on (see ``[tool.setuptools.package-dir]`` in ``pyproject.toml``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from sagad.client import Client, SyncClient
    from sagad.domain.operations import (
        CancelOutcome,
        CancelResult,
        IntakeState,
        RetryOutcome,
        RetryResult,
        Run,
        RunFilter,
        RunPage,
    )
    from sagad.domain.runs import RunId, RunStatus
    from sagad.errors import InvalidBrief, InvalidRequest, RunNotFound, WaitTimedOut

# The client API, loaded on first use: name -> the module that defines it.
_CLIENT_API = {
    "Client": "sagad.client",
    "SyncClient": "sagad.client",
    "Run": "sagad.domain.operations",
    "RunFilter": "sagad.domain.operations",
    "RunPage": "sagad.domain.operations",
    "CancelOutcome": "sagad.domain.operations",
    "CancelResult": "sagad.domain.operations",
    "RetryOutcome": "sagad.domain.operations",
    "RetryResult": "sagad.domain.operations",
    "IntakeState": "sagad.domain.operations",
    "RunId": "sagad.domain.runs",
    "RunStatus": "sagad.domain.runs",
    "InvalidBrief": "sagad.errors",
    "InvalidRequest": "sagad.errors",
    "RunNotFound": "sagad.errors",
    "WaitTimedOut": "sagad.errors",
}

__all__ = [
    "CancelOutcome",
    "CancelResult",
    "Client",
    "IntakeState",
    "InvalidBrief",
    "InvalidRequest",
    "Pipeline",
    "RetryOutcome",
    "RetryPolicy",
    "RetryResult",
    "Run",
    "RunFilter",
    "RunId",
    "RunNotFound",
    "RunPage",
    "RunStatus",
    "SagadError",
    "Step",
    "StepCall",
    "StepContext",
    "StepFailed",
    "StepResult",
    "StepSpec",
    "SyncClient",
    "TransientStepError",
    "Undo",
    "UndoContext",
    "WaitTimedOut",
]


def __getattr__(name: str) -> Any:
    module = _CLIENT_API.get(name)
    if module is None:
        raise AttributeError(f"module 'sagad' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
