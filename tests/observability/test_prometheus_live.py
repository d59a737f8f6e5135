"""The dashboard and the alert rules, evaluated by a real Prometheus scraping a real daemon under load."""

from __future__ import annotations

import math
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.helpers import TABLES, wait_terminal
from tests.processes import Daemon

from .prometheus import Prometheus, Series, running_prometheus, value, values
from .promql import alert_rules, dashboard_queries

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sagad.json"
ALERTS = GRAFANA / "alerts.yml"

LOAD = {Ending.COMPLETED: 240, Ending.QC_FAIL: 20, Ending.DELIVERY_FAIL: 20, Ending.INVALID: 20}
# Alerts whose expression gives no series at all while the daemon is healthy (each ends in a comparison).
SILENT_WHEN_HEALTHY = (
    "SagadLeasesLost", "SagadRunsStuck", "SagadCompensationFailing", "SagadPoisonRuns", "SagadDaemonDown",
    "SagadIntakePaused",
)  # fmt: skip


@pytest.fixture
def daemon(database_url: str, tmp_path: Path) -> Iterator[Daemon]:
    # A short lease makes the renewer tick every 0.5 s; holding at most 20 runs, each of whose steps
    # waits ~20 ms as a service would, spreads the load over many ticks (300 runs can otherwise end in
    # 0.4 s, between two ticks), and the renewals find rows no commit holds (they skip locked ones).
    options = ("--lease-seconds", "1.5", "--max-inflight", "20", "--simulate-latency", "20:60")
    daemon = Daemon(database_url, "observed", tmp_path, *options).start()
    try:
        yield daemon
    finally:
        daemon.ensure_stopped()


@pytest.fixture
async def prometheus(daemon: Daemon, tmp_path: Path) -> AsyncIterator[Prometheus]:
    target = urlsplit(await daemon.metrics_url()).netloc
    async with running_prometheus(target, tmp_path / "prometheus") as prometheus:
        # A scrape before the load: rate() then sees the counters rise from their starting values.
        await prometheus.wait_for('up{job="sagad"}', lambda result: values(result) == [1.0])
        yield prometheus


def _alert_expr(name: str) -> str:
    return dict(alert_rules(ALERTS))[name]


def _labels(series: Series) -> str:
    return ",".join(f"{key}={label}" for key, label in sorted(series["metric"].items())) or "-"


def _print_panels(rows: list[tuple[str, str, list[Series]]]) -> None:
    """What each dashboard panel would show now, for a human reading the test's output (-s)."""
    print(f"\n{'panel':<36} {'query':<100} value(s)")
    for title, expr, result in rows:
        shown = ", ".join(f"{_labels(series)} {float(series['value'][1]):.4g}" for series in result)
        print(f"{title:<36} {expr:<100} {shown}")


async def test_every_dashboard_query_shows_a_real_load_and_no_alert_fires(
    daemon: Daemon, prometheus: Prometheus, db: Database
) -> None:
    outcomes = [outcome for outcome, n in LOAD.items() for _ in range(n)]
    submitted = await RunStore(db).submit_many([(sample_brief(o, seed), None) for seed, o in enumerate(outcomes)])
    statuses = await wait_terminal(db, [run_id for run_id, _ in submitted], seconds=60)
    assert Counter(statuses.values()) == {"completed": 240, "compensated": 60}

    await prometheus.wait_for("sum(sagad_runs_total)", lambda result: values(result) == [300.0])
    await prometheus.wait_for("sum(sagad_leases_held)", lambda result: values(result) == [0.0])
    # The sampler counts runs by status every 5 s; then one more scrape brings the count here.
    await prometheus.wait_for(
        'sagad_runs_by_status{status="completed"}', lambda result: values(result) == [240.0], seconds=15
    )

    panels = [
        (title, expr, await prometheus.wait_for(expr, bool, seconds=5)) for title, expr in dashboard_queries(DASHBOARD)
    ]
    _print_panels(panels)

    by_outcome = await prometheus.query("sum by (outcome) (sagad_runs_total)")
    assert {s["metric"]["outcome"]: float(s["value"][1]) for s in by_outcome} == {
        "completed": 240.0,
        "compensated": 60.0,
    }
    assert value(await prometheus.query("sum(sagad_claims_total)")) >= 300
    assert value(await prometheus.query('sum(sagad_lease_renewals_total{result="renewed"})')) > 0
    assert value(await prometheus.query("sagad_leases_held")) == 0
    assert value(await prometheus.query("sum(sagad_compensated_rows_total)")) > 0
    deleted_from = await prometheus.query("sum by (table) (sagad_compensated_rows_total) > 0")
    assert deleted_from
    assert {series["metric"]["table"] for series in deleted_from} <= {*TABLES, "step_outputs"}
    p99 = value(
        await prometheus.query("histogram_quantile(0.99, sum by (le) (rate(sagad_run_duration_seconds_bucket[1m])))")
    )
    assert math.isfinite(p99)
    assert p99 > 0
    assert value(await prometheus.query('up{job="sagad"}')) == 1

    for name in SILENT_WHEN_HEALTHY:
        assert await prometheus.query(_alert_expr(name)) == [], f"{name} fires on a healthy daemon"
    for name in ("SagadLatencySLO", "SagadEventLoopLagging"):  # on a loaded machine either may be true
        await prometheus.query(_alert_expr(name))  # raises with Prometheus's reason if it cannot run
    # Prometheus itself evaluates the rule file it loaded, every second: no rule in error, none active.
    [group] = (await prometheus.api("rules", type="alert"))["groups"]
    assert {rule["name"]: rule["health"] for rule in group["rules"]} == dict.fromkeys(
        (name for name, _ in alert_rules(ALERTS)), "ok"
    )
    assert (await prometheus.api("alerts"))["alerts"] == []


async def test_daemon_down_alert_fires_when_the_daemon_is_killed(daemon: Daemon, prometheus: Prometheus) -> None:
    daemon_down = _alert_expr("SagadDaemonDown")
    assert await prometheus.query(daemon_down) == []
    # Before the first scrape absent(up) held and the rule went pending; wait until it has seen the daemon.
    alert = 'ALERTS{alertname="SagadDaemonDown"}'
    await prometheus.wait_for(alert, lambda result: result == [])

    daemon.signal(signal.SIGKILL)
    assert await daemon.wait() == -signal.SIGKILL

    [down] = await prometheus.wait_for(daemon_down, bool, seconds=10)
    assert (down["metric"]["job"], float(down["value"][1])) == ("sagad", 0.0)
    # The loaded rule sees it too: pending for its `for:` minute before it would fire.
    [pending] = await prometheus.wait_for(alert, bool, seconds=10)
    assert pending["metric"]["alertstate"] == "pending"
