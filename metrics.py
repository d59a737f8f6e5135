"""Prometheus metrics of one daemon, built on a registry that tests can make fresh."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sagad.domain.runs import STATUS_NAMES, TERMINAL
from sagad.domain.steps import BUSINESS_TABLES, STEP_NAMES

# Steps and compensations commit in milliseconds; leases and whole runs take longer.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


ACTORS = (*STEP_NAMES, "compensator", "claimer", "renewer", "sampler", "reaper")
DB_OPERATIONS = ("claim", "renewal", "release", "reap", "sample", "listen", "lock", "commit")
"""What sagad waits on the database for, as ``store/`` names it (``commit``: step and compensation commits)."""
LEASE_LOSS_FINDERS = ("renewal", "step", "compensation")


class Metrics:
    """Every metric sagad exports; label values are bounded (steps, tables, actors, outcomes)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.step_duration = Histogram(
            "sagad_step_duration_seconds",
            "Duration of one step transaction (a group commit), by step and outcome.",
            ["step", "outcome"],
            buckets=_FAST_BUCKETS,
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
            "Step or compensation writes refused because the lease had passed to another daemon.",
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
            "Step batches retried after a transient database error.",
            ["step"],
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
        self.runs_by_status = Gauge(
            "sagad_runs_by_status",
            "Runs in the database by status, sampled by each daemon (a database-wide view).",
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
        self.leases_lost = Counter(
            "sagad_leases_lost",
            "Runs this daemon found taken over by another daemon, by what found it (renewal, step, compensation).",
            ["found_by"],
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
            self.step_retries.labels(step)
            for outcome in ("ok", "failed", "retried"):
                self.step_duration.labels(step, outcome)
        for status in TERMINAL:
            self.runs.labels(status.value)
            self.run_duration.labels(status.value)
        for result in ("renewed", "lost"):
            self.lease_renewals.labels(result)
        for stage in ("step", "compensation"):
            self.fenced.labels(stage)
        for actor in ACTORS:
            self.actor_restarts.labels(actor)
        for kind in ("transient", "permanent"):
            self.db_errors.labels(kind)
        for table in BUSINESS_TABLES:
            self.compensated_rows.labels(table)
        for name in STATUS_NAMES:
            self.runs_by_status.labels(name)
        for operation in DB_OPERATIONS:
            self.db_timeouts.labels(operation)
        for finder in LEASE_LOSS_FINDERS:
            self.leases_lost.labels(finder)
