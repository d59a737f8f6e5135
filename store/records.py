"""What the store hands out besides the domain's records: run views and audit reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
