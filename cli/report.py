"""The load test's report: throughput, latency percentiles, outcomes against the mix, the audit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sagad.cli.load import Mix, Outages
from sagad.store.records import AuditReport, RunEnd


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max by nearest rank, in milliseconds."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1] * 1000}


@dataclass(frozen=True, slots=True)
class LoadReport:
    runs: int
    unfinished: int
    seconds: float
    outcomes: dict[str, int]
    expected: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    compensation_ms: dict[str, float]
    audit: AuditReport
    outages: int = 0
    """Times the database stopped answering (restarted, connections cut), ridden out with capped backoff."""
    waited_seconds: float = 0.0

    @classmethod
    def build(cls, mix: Mix, finished: list[RunEnd], audit: AuditReport, outages: Outages | None = None) -> LoadReport:
        runs = sum(mix.counts.values())
        seconds = 0.0
        if finished:
            seconds = max(f.finished_at for f in finished) - min(f.submitted_at for f in finished)
        by_outcome: dict[str, list[float]] = {}
        for f in finished:
            by_outcome.setdefault(f.outcome, []).append(f.latency)
        compensation = [f.finished_at - f.failed_at for f in finished if f.failed_at is not None]
        return cls(
            runs=runs,
            unfinished=runs - len(finished),
            seconds=seconds,
            outcomes=dict(Counter(f.outcome for f in finished)),
            expected=mix.expected_statuses(),
            latency_ms={outcome: percentiles(values) for outcome, values in sorted(by_outcome.items())},
            compensation_ms=percentiles(compensation),
            audit=audit,
            outages=0 if outages is None else outages.count,
            waited_seconds=0.0 if outages is None else outages.seconds,
        )

    @property
    def throughput(self) -> float:
        return (self.runs - self.unfinished) / self.seconds if self.seconds else 0.0

    @property
    def outcomes_match(self) -> bool:
        return {k: v for k, v in self.outcomes.items() if v} == {k: v for k, v in self.expected.items() if v}

    @property
    def ok(self) -> bool:
        return not self.unfinished and self.outcomes_match and self.audit.clean

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs": self.runs,
            "unfinished": self.unfinished,
            "seconds": round(self.seconds, 3),
            "throughput_runs_per_s": round(self.throughput, 1),
            "outcomes": self.outcomes,
            "expected_outcomes": self.expected,
            "outcomes_match": self.outcomes_match,
            "latency_ms": {k: {q: round(v, 2) for q, v in p.items()} for k, p in self.latency_ms.items()},
            "compensation_latency_ms": {q: round(v, 2) for q, v in self.compensation_ms.items()},
            "audit": self.audit.as_dict(),
            "database_outages": {"count": self.outages, "waited_s": round(self.waited_seconds, 3)},
        }

    def render(self) -> str:
        lines = [
            f"runs: {self.runs} in {self.seconds:.2f} s = {self.throughput:,.0f} runs/s"
            + (f" ({self.unfinished} UNFINISHED)" if self.unfinished else ""),
            f"outcomes: {self.outcomes} (expected {self.expected}): "
            + ("match" if self.outcomes_match else "MISMATCH"),
        ]
        for outcome, p in self.latency_ms.items():
            lines.append(f"latency {outcome:12} " + "  ".join(f"{q} {v:8.1f} ms" for q, v in p.items()))
        if self.compensation_ms:
            lines.append(
                f"compensation {'':7} " + "  ".join(f"{q} {v:8.1f} ms" for q, v in self.compensation_ms.items())
            )
        if self.outages:
            lines.append(f"database outages: {self.outages}, {self.waited_seconds:.1f} s waited for it to answer again")
        lines.append(self.audit.render())
        return "\n".join(lines)
