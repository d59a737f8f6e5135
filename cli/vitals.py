"""How the daemons a load test started fared: runs in flight, database connections, memory, event loop lag.

Sampled once a second while the load runs, from each daemon's metrics endpoint, from ``/proc`` and
from ``pg_stat_activity``.
"""

from __future__ import annotations

import contextlib
import math
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from sagad.errors import DatabaseError
from sagad.store.db import Database

# Connections to the load test's database, but for the load test's own.
_CONNECTIONS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name IS DISTINCT FROM $1
"""


@dataclass(frozen=True, slots=True)
class Watched:
    """A daemon the load test started: its process id and its metrics endpoint."""

    pid: int
    endpoint: str


@dataclass(slots=True)
class Vitals:
    """The most the daemons held, used and lagged while the load ran."""

    most_in_flight: int = 0
    """Runs held by the daemons at once (the sum of their ``sagad_leases_held``)."""
    most_connections: int = 0
    """Database connections the daemons had open at once."""
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    lag_p99_seconds: float = math.nan
    """The 99th percentile of event loop lag, over the daemons, since the first sample."""
    lag_at_start: dict[float, float] = field(default_factory=dict)
    commits: int = 0
    """Step commits the daemons made (the last sample's ``sagad_step_commit_runs_count``)."""
    committed: int = 0
    """Runs in those commits: over ``commits``, the mean batch."""

    @property
    def rss_per_run_in_flight_kib(self) -> float:
        if not self.most_in_flight:
            return math.nan
        return (self.rss_peak_kib - self.rss_start_kib) / self.most_in_flight

    def as_dict(self) -> dict[str, Any]:
        return {
            "most_runs_in_flight": self.most_in_flight,
            "most_database_connections": self.most_connections,
            "rss_start_mib": round(self.rss_start_kib / 1024, 1),
            "rss_peak_mib": round(self.rss_peak_kib / 1024, 1),
            "rss_per_run_in_flight_kib": round(self.rss_per_run_in_flight_kib, 2),
            "event_loop_lag_p99_ms": round(self.lag_p99_seconds * 1000, 2),
            "mean_commit_batch": round(self.committed / self.commits, 1) if self.commits else None,
        }


def resident_kib(pid: int) -> int:
    """The process's resident memory, from /proc (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _scrape(endpoint: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def quantile(q: float, buckets: dict[float, float]) -> float:
    """``histogram_quantile`` as Prometheus computes it, from cumulative bucket counts by upper bound."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if not bounds or total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


async def watch(db: Database, daemons: list[Watched], vitals: Vitals, own_application: str) -> None:
    """Sample until cancelled; ``vitals`` holds the most seen so far."""
    vitals.rss_start_kib = sum(resident_kib(daemon.pid) for daemon in daemons)
    await sample_once(db, daemons, vitals, own_application)
    while True:
        await anyio.sleep(1.0)
        await sample_once(db, daemons, vitals, own_application)


async def sample_once(db: Database, daemons: list[Watched], vitals: Vitals, own_application: str) -> None:
    vitals.rss_peak_kib = max(vitals.rss_peak_kib, sum(resident_kib(daemon.pid) for daemon in daemons))
    with contextlib.suppress(DatabaseError):  # an outage: the next sample tells
        connections = int((await db.fetch(_CONNECTIONS, own_application))[0][0])
        vitals.most_connections = max(vitals.most_connections, connections)
    held = commits = committed = 0
    lag: dict[float, float] = {}
    for daemon in daemons:
        try:
            samples = await anyio.to_thread.run_sync(_scrape, daemon.endpoint)
        except OSError:
            continue  # it stopped, or is restarting
        held += int(sum(value for _, value in samples.get("sagad_leases_held", [])))
        commits += int(sum(value for _, value in samples.get("sagad_step_commit_runs_count", [])))
        committed += int(sum(value for _, value in samples.get("sagad_step_commit_runs_sum", [])))
        for labels, value in samples.get("sagad_event_loop_lag_seconds_bucket", []):
            bound = float(labels["le"])
            lag[bound] = lag.get(bound, 0.0) + value
    vitals.most_in_flight = max(vitals.most_in_flight, held)
    if commits >= vitals.commits:  # a restarted daemon starts its counts again: keep the most seen
        vitals.commits, vitals.committed = commits, committed
    if lag and not vitals.lag_at_start:
        vitals.lag_at_start = lag
    elif lag:
        since = {bound: count - vitals.lag_at_start.get(bound, 0.0) for bound, count in lag.items()}
        vitals.lag_p99_seconds = quantile(0.99, since)
