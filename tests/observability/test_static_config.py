"""Static checks of the shipped observability: compose file, Prometheus config, alerts, dashboard."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from sagad import metrics
from sagad.endpoint import Endpoint, Health

from .promql import alert_rules, dashboard_queries, metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = GRAFANA / "prometheus.yml"
ALERTS = GRAFANA / "alerts.yml"
ALERTS_TEST = GRAFANA / "alerts_test.yml"
DASHBOARD = GRAFANA / "dashboards" / "sagad.json"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "sagad.yml"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

STEPS = ("normalize_brief", "generate_strategy", "generate_draft", "qc_evaluate", "deliver")
TABLES = (
    "onboarding_brief", "onboarding_intake", "strategy_document", "production_drafts",
    "production_bundles", "production_bundle_assets", "qc_results", "qc_issues",
    "delivery_packages", "delivery_artifacts",
)  # fmt: skip
# The label values of the DESIGN.md contract; `outcome` means one thing on steps and another on runs.
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "step": STEPS,
    "table": (*TABLES, "step_outputs"),
    "actor": (*STEPS, "compensator"),
    "direction": ("forward", "backward"),
    "result": ("renewed", "lost"),
    "stage": ("call", "step", "compensation"),
    "kind": ("transient", "permanent"),
    "status": ("pending", "running", "compensating", "completed", "compensated"),
    "reason": ("transient", "timeout", "error", "database", "locked"),
    "found_by": ("renewal", "call", "step", "compensation", "undo"),
    "operation": ("claim", "renewal", "release", "reap", "sample", "listen", "lock", "commit"),
}
OUTCOMES = {
    "sagad_step_duration_seconds": ("ok", "failed", "retried"),
    "sagad_step_call_duration_seconds": ("ok", "failed", "retried"),
    "sagad_undo": ("ok", "retried", "failed"),
    "sagad_run_duration_seconds": ("completed", "compensated"),
    "sagad_runs": ("completed", "compensated"),
}
ALERT_NAMES = {
    "SagadLeasesLost", "SagadRunsStuck", "SagadCompensationFailing", "SagadPoisonRuns", "SagadLatencySLO",
    "SagadDaemonDown", "SagadUndoFailing", "SagadEventLoopLagging", "SagadIntakePaused",
}  # fmt: skip
SCRAPE_ONLY = {"up"}


def _label_values(family: str, label: str) -> tuple[str, ...]:
    if label == "outcome":
        return OUTCOMES[family]
    assert label in LABEL_VALUES, f"{family} has label {label!r}: add its contracted values to LABEL_VALUES"
    return LABEL_VALUES[label]


def _record_every_labelled_sample(m: metrics.Metrics) -> None:
    for metric in vars(m).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = metric._name
        labels = metric._labelnames
        for values in itertools.product(*(_label_values(family, label) for label in labels)):
            child = metric.labels(*values) if labels else metric
            if isinstance(child, Histogram):
                child.observe(0.01)
            elif isinstance(child, Counter):
                child.inc()
            elif isinstance(child, Gauge):
                child.set(1)
            else:
                raise TypeError(f"{family}: teach this test to record a {type(metric).__name__} here")


@pytest.fixture(scope="module")
def exported_families() -> dict[str, set[str]]:
    """Metric family name -> sample names, as a daemon exports them once every label was used."""
    m = metrics.Metrics()
    _record_every_labelled_sample(m)
    return {family.name: {sample.name for sample in family.samples} for family in m.registry.collect()}


def _exported_names(families: dict[str, set[str]]) -> set[str]:
    return set().union(*families.values()) | SCRAPE_ONLY


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def _promtool(*args: str | Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: install it with Debian's prometheus package (CI does)")
    result = subprocess.run(
        [promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"


def test_compose_file_follows_the_compose_spec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_grafana_publishes_a_port_and_only_on_loopback() -> None:
    services = _compose()["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {"grafana": ["127.0.0.1:3000:3000"]}


def test_sagad_replicas_are_scaled_and_scraped_on_the_metrics_port() -> None:
    sagad = _compose()["services"]["sagad"]
    assert "container_name" not in sagad, "a fixed container name keeps the service from scaling"
    assert sagad["deploy"]["replicas"] >= 2
    [job] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    [dns] = job["dns_sd_configs"]
    assert (job["job_name"], dns["names"], dns["type"]) == ("sagad", ["sagad"], "A")
    assert f"0.0.0.0:{dns['port']}" in sagad["command"]


def _healthcheck_probe(url: str) -> int:
    """Run the sagad service's healthcheck command here, pointed at ``url``; its exit status."""
    command = _compose()["services"]["sagad"]["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python", "-c"], command
    script = command[3].replace("http://127.0.0.1:9464", url)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30, check=False)
    return done.returncode


def test_sagad_healthcheck_probes_readiness_on_the_metrics_port() -> None:
    sagad = _compose()["services"]["sagad"]
    [script] = sagad["healthcheck"]["test"][3:]
    port = sagad["command"][sagad["command"].index("--metrics-addr") + 1].rsplit(":", 1)[1]
    assert f"'http://127.0.0.1:{port}/readyz'" in script
    assert sagad["healthcheck"]["retries"] >= 1
    assert _compose()["services"]["loadgen"]["depends_on"]["sagad"] == {"condition": "service_healthy"}


def test_sagad_healthcheck_fails_until_the_daemon_is_ready_and_once_it_stops() -> None:
    health = Health()
    with Endpoint(health, metrics.Metrics().registry, "127.0.0.1", 0) as endpoint:
        assert _healthcheck_probe(endpoint.url) != 0
        health.claim_succeeded()
        assert _healthcheck_probe(endpoint.url) == 0
        health.draining()
        assert _healthcheck_probe(endpoint.url) != 0


def test_prometheus_config_is_valid() -> None:
    # promtool resolves rule_files beside the config file, as Prometheus does in the container.
    _promtool("check", "config", PROMETHEUS_CONFIG)


def test_prometheus_container_finds_the_rule_files() -> None:
    mounts = _mounts(_compose()["services"]["prometheus"])
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        in_container = str(PurePosixPath("/etc/prometheus") / rule_file)
        assert mounts.get(in_container) == (PROMETHEUS_CONFIG.parent / rule_file).resolve(), in_container


def test_alert_rules_are_valid() -> None:
    _promtool("check", "rules", ALERTS)


def test_alert_rules_pass_their_unit_tests() -> None:
    _promtool("test", "rules", ALERTS_TEST)


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == ALERT_NAMES
    assert silent == ALERT_NAMES


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_alerts_name_only_exported_metrics(exported_families: dict[str, set[str]]) -> None:
    exported = _exported_names(exported_families)
    for alert, expr in alert_rules(ALERTS):
        assert metric_names(expr) <= exported, f"{alert}: {metric_names(expr) - exported} not exported"


def test_dashboard_queries_name_only_exported_metrics(exported_families: dict[str, set[str]]) -> None:
    exported = _exported_names(exported_families)
    queries = dashboard_queries(DASHBOARD)
    assert queries
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: {names - exported} not exported by the daemon"


def test_every_exported_metric_is_on_the_dashboard(exported_families: dict[str, set[str]]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries(DASHBOARD)))
    missing = [family for family, samples in exported_families.items() if not samples & used]
    assert not missing, f"metrics on no dashboard panel: {missing}"
    assert "up" in used


def test_dashboard_queries_run_as_written_on_the_provisioned_datasource() -> None:
    [datasource] = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    assert (datasource["uid"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
    # Without Grafana variables ($__rate_interval, ...) a test can send each query to Prometheus as it is.
    for title, expr in dashboard_queries(DASHBOARD):
        assert "$" not in expr, f"{title}: {expr}"


def test_grafana_loads_the_dashboard_from_its_mount() -> None:
    [provider] = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"]
    mounts = _mounts(_compose()["services"]["grafana"])
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
