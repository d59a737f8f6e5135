"""The load test's report: throughput, latency percentiles, outcomes against the mix, the audit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagad.cli.load import Mix, Outages
from sagad.cli.vitals import Vitals
from sagad.content.delivery import idempotency_key
from sagad.domain.runs import RunId
from sagad.loadtest.journal import JournalSummary
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
class Deliveries:
    """What the load test's delivery endpoint received, against how the runs ended."""

    accepted: int
    completed_not_accepted: int
    accepted_more_than_once: int
    compensated_still_delivered: int
    retracted: int

    @classmethod
    def check(cls, summary: JournalSummary, finished: Mapping[RunId, RunEnd]) -> Deliveries:
        completed = {idempotency_key(run) for run, end in finished.items() if end.outcome == "completed"}
        compensated = {idempotency_key(run) for run, end in finished.items() if end.outcome == "compensated"}
        delivered = set(summary.accepted) - set(summary.retracted)
        return cls(
            accepted=len(summary.accepted),
            completed_not_accepted=len(completed - set(summary.accepted)),
            accepted_more_than_once=sum(1 for n in summary.accepted.values() if n > 1),
            compensated_still_delivered=len(compensated & delivered),
            retracted=len(summary.retracted),
        )

    @property
    def ok(self) -> bool:
        """Every completed run's package accepted exactly once; none of a compensated run's left delivered."""
        return not (self.completed_not_accepted or self.accepted_more_than_once or self.compensated_still_delivered)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **{name: getattr(self, name) for name in self.__slots__}}


def _steady_rate(ends: list[float]) -> float:
    """Finishes per second from the tenth percentile of ``ends`` (sorted) to the ninetieth."""
    first, last = len(ends) // 10, len(ends) * 9 // 10
    seconds = ends[last - 1] - ends[first] if last - 1 > first else 0.0
    return (last - 1 - first) / seconds if seconds > 0 else 0.0


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
    submit_seconds: float = 0.0
    """From the first submission to the last, in database time."""
    vitals: Vitals | None = None
    deliveries: Deliveries | None = None
    outages: int = 0
    """Times the database stopped answering (restarted, connections cut), ridden out with capped backoff."""
    waited_seconds: float = 0.0
    steady_per_s: float = 0.0
    """Runs finished per second in the middle of the load, from its tenth finished run to its ninetieth:
    the rate a daemon keeps up, without the ramp at the start or the tail of the slowest runs."""

    @classmethod
    def build(
        cls,
        mix: Mix,
        finished: list[RunEnd],
        audit: AuditReport,
        *,
        vitals: Vitals | None = None,
        deliveries: Deliveries | None = None,
        outages: Outages | None = None,
    ) -> LoadReport:
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
            submit_seconds=(max(f.submitted_at for f in finished) - min(f.submitted_at for f in finished))
            if finished
            else 0.0,
            vitals=vitals,
            deliveries=deliveries,
            outages=0 if outages is None else outages.count,
            waited_seconds=0.0 if outages is None else outages.seconds,
            steady_per_s=_steady_rate(sorted(f.finished_at for f in finished)),
        )

    @property
    def throughput(self) -> float:
        return (self.runs - self.unfinished) / self.seconds if self.seconds else 0.0

    @property
    def submitted_per_s(self) -> float:
        """The rate the submissions reached the database at (what ``--rate`` asks for)."""
        return (self.runs - self.unfinished - 1) / self.submit_seconds if self.submit_seconds else 0.0

    @property
    def outcomes_match(self) -> bool:
        return {k: v for k, v in self.outcomes.items() if v} == {k: v for k, v in self.expected.items() if v}

    @property
    def ok(self) -> bool:
        delivered = self.deliveries is None or self.deliveries.ok
        return not self.unfinished and self.outcomes_match and self.audit.clean and delivered

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs": self.runs,
            "unfinished": self.unfinished,
            "seconds": round(self.seconds, 3),
            "throughput_runs_per_s": round(self.throughput, 1),
            "submitted_per_s": round(self.submitted_per_s, 1),
            "steady_runs_per_s": round(self.steady_per_s, 1),
            "outcomes": self.outcomes,
            "expected_outcomes": self.expected,
            "outcomes_match": self.outcomes_match,
            "latency_ms": {k: {q: round(v, 2) for q, v in p.items()} for k, p in self.latency_ms.items()},
            "compensation_latency_ms": {q: round(v, 2) for q, v in self.compensation_ms.items()},
            "audit": self.audit.as_dict(),
            **({"daemons": self.vitals.as_dict()} if self.vitals else {}),
            **({"deliveries": self.deliveries.as_dict()} if self.deliveries else {}),
            "database_outages": {"count": self.outages, "waited_s": round(self.waited_seconds, 3)},
        }

    def render(self) -> str:
        lines = [
            f"runs: {self.runs} in {self.seconds:.2f} s = {self.throughput:,.0f} runs/s"
            + (f" ({self.unfinished} UNFINISHED)" if self.unfinished else "")
            + f"; submitted at {self.submitted_per_s:,.1f} runs/s; {self.steady_per_s:,.0f} runs/s steady",
            f"outcomes: {self.outcomes} (expected {self.expected}): "
            + ("match" if self.outcomes_match else "MISMATCH"),
        ]
        for outcome, p in self.latency_ms.items():
            lines.append(f"latency {outcome:12} " + "  ".join(f"{q} {v:8.1f} ms" for q, v in p.items()))
        if self.compensation_ms:
            lines.append(
                f"compensation {'':7} " + "  ".join(f"{q} {v:8.1f} ms" for q, v in self.compensation_ms.items())
            )
        if self.vitals:
            v = self.vitals
            lines.append(
                f"daemons: at most {v.most_in_flight} runs in flight, {v.most_connections} database connections; "
                f"RSS {v.rss_start_kib / 1024:.0f} -> {v.rss_peak_kib / 1024:.0f} MiB "
                f"({v.rss_per_run_in_flight_kib:.1f} KiB a run in flight); "
                f"event loop lag p99 {v.lag_p99_seconds * 1000:.1f} ms"
            )
        if self.deliveries:
            d = self.deliveries
            lines.append(
                f"deliveries: {d.accepted} packages accepted, {d.retracted} retracted; "
                + ("every completed run's once, no compensated run's" if d.ok else f"WRONG: {d.as_dict()}")
            )
        if self.outages:
            lines.append(f"database outages: {self.outages}, {self.waited_seconds:.1f} s waited for it to answer again")
        lines.append(self.audit.render())
        return "\n".join(lines)
