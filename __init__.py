"""sagad: a saga pipeline daemon on PostgreSQL.

The repository root is this package: ``actors/`` is ``sagad.actors``, ``supervisor.py`` is
``sagad.supervisor``, and so on (see ``[tool.setuptools.package-dir]`` in ``pyproject.toml``).
What a team imports is re-exported here (``__all__``); nothing else is promised. The names load
on first use, so that ``import sagad`` (and every ``sagad`` command) costs only what it uses.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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
    from sagad.errors import InvalidBrief, InvalidRequest, RunNotFound, SagadError, WaitTimedOut

# The client API: name -> the module that defines it.
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
    "SagadError": "sagad.errors",
    "InvalidBrief": "sagad.errors",
    "InvalidRequest": "sagad.errors",
    "RunNotFound": "sagad.errors",
    "WaitTimedOut": "sagad.errors",
}

_LAZY: dict[str, str] = {**_CLIENT_API}

__all__ = [
    "CancelOutcome",
    "CancelResult",
    "Client",
    "IntakeState",
    "InvalidBrief",
    "InvalidRequest",
    "RetryOutcome",
    "RetryResult",
    "Run",
    "RunFilter",
    "RunId",
    "RunNotFound",
    "RunPage",
    "RunStatus",
    "SagadError",
    "SyncClient",
    "WaitTimedOut",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sagad' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
