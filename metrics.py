"""Prometheus metrics of one daemon, built on a registry that tests can make fresh."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sagad.domain.db_operations import Operation
from sagad.domain.runs import STATUS_NAMES, TERMINAL
from sagad.domain.steps import BUSINESS_TABLES, STEP_NAMES

# Steps and compensations commit in milliseconds; leases and whole runs take longer.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A step's call may be instant (a generator) or wait on a service for many seconds.
_CALL_BUCKETS = (0.0001, 0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Fine around 20 to 50 ms, where a busy daemon's p99 lies: a quantile is interpolated within a bucket,
# and a wide one (25 to 50 ms) would report the p99 as far as a third higher or lower than it is.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

STEP_CALL_OUTCOMES = ("ok", "failed", "retried")
RETRY_REASONS = ("transient", "timeout", "error", "database", "locked")
"""Why a step was tried again: the step said so, its timeout passed, it raised something
unexpected, its commit hit a transient database error, or another transaction held its run's row."""
UNDO_OUTCOMES = ("ok", "retried", "failed")
LOST_LEASE_FINDERS = ("renewal", "call", "step", "compensation", "undo")


ACTORS = (*STEP_NAMES, "compensator", "claimer", "renewer", "sampler", "reaper", "event_loop")
DB_OPERATIONS = tuple(operation.value for operation in Operation)
"""What sagad waits on the database for (``commit``: step and compensation commits), declared once."""


class Metrics:
    """Every metric sagad exports; label values are bounded (steps, tables, actors, outcomes)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.step_duration = Histogram(
            "sagad_step_duration_seconds",
            "Duration of one step's commit (a group commit of many runs), by step and outcome.",
            ["step", "outcome"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "sagad_step_commit_runs",
            "Runs in one step's group commit, by step.",
            ["step"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.step_call_duration = Histogram(
            "sagad_step_call_duration_seconds",
            "Duration of one call of a step for one run (no database held), by step and outcome.",
            ["step", "outcome"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.calls_in_flight = Gauge(
            "sagad_step_calls_in_flight",
            "Calls of a step running now (retries waiting included), by step.",
            ["step"],
            registry=r,
        )
        self.undos = Counter(
            "sagad_undo",
            "Undos of a step run for compensated runs, by step and outcome (ok, retried, failed).",
            ["step", "outcome"],
            registry=r,
        )
        self.leases_lost = Counter(
            "sagad_leases_lost",
            "Runs this daemon found taken over by another daemon, by what found it.",
            ["found_by"],
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "sagad_event_loop_lag_seconds",
            "How late the event loop woke a task that slept a fixed interval (the daemon's responsiveness).",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "sagad_run_duration_seconds",
            "Time from submission to a terminal state, by outcome.",
            ["outcome"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.runs = Counter("sagad_runs", "Runs that reached a terminal state, by outcome.", ["outcome"], registry=r)
        self.compensation_duration = Histogram(
            "sagad_compensation_duration_seconds",
            "Duration of one compensation transaction.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.compensated_rows = Counter(
            "sagad_compensated_rows", "Rows hard-deleted by compensation, by table.", ["table"], registry=r
        )
        self.compensation_failures = Counter(
            "sagad_compensation_failures",
            "Compensation transactions that failed and will be retried.",
            registry=r,
        )
        self.lease_renewals = Counter(
            "sagad_lease_renewals",
            "Leases renewed or found lost, counted per run at each renewal tick.",
            ["result"],
            registry=r,
        )
        self.lease_renewal_duration = Histogram(
            "sagad_lease_renewal_duration_seconds",
            "Duration of one renewal statement (all held runs at once).",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.leases_held = Gauge("sagad_leases_held", "Runs this daemon holds a lease on.", registry=r)
        self.claims = Counter("sagad_claims", "Runs claimed by this daemon.", registry=r)
        self.fenced = Counter(
            "sagad_fenced_writes",
            "Calls cancelled, and step or compensation writes refused, because the lease had passed to another daemon.",
            ["stage"],
            registry=r,
        )
        self.inbox_depth = Gauge(
            "sagad_actor_inbox_depth",
            "Messages waiting in an actor's inbox.",
            ["actor", "direction"],
            registry=r,
        )
        self.step_retries = Counter(
            "sagad_step_retries",
            "Step calls and commits tried again, by step and reason.",
            ["step", "reason"],
            registry=r,
        )
        self.actor_restarts = Counter(
            "sagad_actor_restarts", "Actors restarted by the supervisor after a crash.", ["actor"], registry=r
        )
        self.poison_runs = Counter(
            "sagad_poison_runs",
            "Runs failed because they were claimed too many times without finishing.",
            registry=r,
        )
        self.cancels_taken = Counter(
            "sagad_cancels_taken",
            "Runs in flight on this daemon whose cancel it learned of at a renewal, and sent backward.",
            registry=r,
        )
        self.retries_started = Counter(
            "sagad_retries_started",
            "Runs submitted as the retry of a compensated run (sagad runs retry), counted by the daemon that"
            " claimed each the first time.",
            registry=r,
        )
        self.cancel_to_compensated = Histogram(
            "sagad_cancel_to_compensated_seconds",
            "From a run's cancel request to the commit of its compensation by this daemon (database time); its"
            " count is the cancels this daemon carried out (a run cancelled while pending is compensated by"
            " the cancel itself, and not counted).",
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.intake_paused = Gauge(
            "sagad_intake_paused",
            "1 while the fleet's intake is paused (sagad intake pause): no daemon claims new runs (database-wide).",
            registry=r,
        )
        self.cancels_waiting = Gauge(
            "sagad_cancels_waiting",
            "Unfinished runs whose cancel was asked for and not yet carried out (database-wide).",
            registry=r,
        )
        self.oldest_cancel_seconds = Gauge(
            "sagad_oldest_cancel_seconds",
            "How long the oldest cancel not yet carried out has waited (database-wide; 0 when none waits).",
            registry=r,
        )
        self.runs_by_status = Gauge(
            "sagad_runs_by_status",
            "Runs in the database by status, sampled by each daemon (a database-wide view): pending, running "
            "and compensating counted, completed and compensated estimated from the server's statistics.",
            ["status"],
            registry=r,
        )
        self.runs_overdue = Gauge(
            "sagad_runs_overdue",
            "Claimed runs whose lease expired and that no daemon has taken over (database-wide).",
            registry=r,
        )
        self.db_errors = Counter(
            "sagad_db_errors",
            "Database errors seen by the daemon, by kind (transient or permanent).",
            ["kind"],
            registry=r,
        )
        self.db_timeouts = Counter(
            "sagad_db_timeouts",
            "Statements abandoned (no answer in time; connection dropped) or cancelled by the server at their"
            " time limit, by operation.",
            ["operation"],
            registry=r,
        )
        self.reaped_runs = Counter(
            "sagad_reaped_runs",
            "Runs of dead daemons (worker lock free) made claimable before their lease ended.",
            registry=r,
        )
        self.stalled_sessions_ended = Counter(
            "sagad_stalled_sessions_ended",
            "Sessions holding run rows in a transaction, stalled on their client mid-statement, ended by this"
            " daemon's reaper.",
            registry=r,
        )
        self.worker_lock_held = Gauge(
            "sagad_worker_lock_held",
            "1 while this daemon holds the lock on its worker id; without it, peers take it for dead.",
            registry=r,
        )
        self._create_series()

    def _create_series(self) -> None:
        """Export every bounded label combination from the start, so rates see the first event."""
        for step in STEP_NAMES:
            self.calls_in_flight.labels(step)
            self.commit_batch.labels(step)
            for reason in RETRY_REASONS:
                self.step_retries.labels(step, reason)
            for outcome in STEP_CALL_OUTCOMES:
                self.step_duration.labels(step, outcome)
                self.step_call_duration.labels(step, outcome)
            for outcome in UNDO_OUTCOMES:
                self.undos.labels(step, outcome)
        for status in TERMINAL:
            self.runs.labels(status.value)
            self.run_duration.labels(status.value)
        one_label: list[tuple[Counter | Gauge, Iterable[str]]] = [
            (self.leases_lost, LOST_LEASE_FINDERS),
            (self.lease_renewals, ("renewed", "lost")),
            (self.fenced, ("call", "step", "compensation")),
            (self.actor_restarts, ACTORS),
            (self.db_errors, ("transient", "permanent")),
            (self.compensated_rows, (*BUSINESS_TABLES, "step_outputs")),
            (self.runs_by_status, STATUS_NAMES),
            (self.db_timeouts, DB_OPERATIONS),
        ]
        for metric, values in one_label:
            for value in values:
                metric.labels(value)
