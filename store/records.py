"""What the store hands out besides the domain's records: run views and audit reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sagad.domain.runs import RunId


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How and when a run ended, in database time (seconds since the epoch)."""

    outcome: str
    submitted_at: float
    finished_at: float
    failed_at: float | None

    @property
    def latency(self) -> float:
        return self.finished_at - self.submitted_at


@dataclass(frozen=True, slots=True)
class RunDetails:
    """A run as ``sagad status`` shows it."""

    run_id: RunId
    status: str
    current_step: str | None
    failed_step: str | None
    attempts: int
    last_error: str | None
    compensation_error: str | None
    """Why a compensation has not finished yet (an undo kept failing)."""
    claimed_by: str | None
    lease_token: int
    idempotency_key: str | None
    submitted_at: datetime
    started_at: datetime | None
    failed_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids as strings, times in ISO 8601."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        out["run_id"] = str(self.run_id)
        return out


@dataclass(frozen=True, slots=True)
class AuditFinding:
    """One broken invariant, with how many rows or runs break it and a few examples."""

    invariant: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The invariants checked, and what broke."""

    runs_by_status: dict[str, int]
    findings: tuple[AuditFinding, ...]

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "runs_by_status": self.runs_by_status,
            "findings": [
                {"invariant": f.invariant, "count": f.count, "examples": list(f.examples)} for f in self.findings
            ],
        }

    def render(self) -> str:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(self.runs_by_status.items())) or "no runs"
        lines = [f"runs: {counts}"]
        if self.clean:
            lines.append("audit clean: every invariant holds")
        for finding in self.findings:
            lines.append(f"VIOLATED {finding.invariant}: {finding.count}")
            lines.extend(f"  e.g. {example}" for example in finding.examples)
        return "\n".join(lines)
