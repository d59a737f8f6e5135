"""Load scenarios beyond the instant pipeline, each through ``sagad loadtest`` as a user would run it.

    python -m bench.scenarios [--only slow,slow-full,slow-rate,http,far,far-rate] [--database-url URL] [--json]

- ``slow``: every step waits ~1 s (lognormal, p99 3 s) as a service would; 100,000 runs submitted at once,
  7,500 in flight (the issue's target: 5,000 in flight, 1,000 runs/s, lag p99 50 ms, all in one run).
- ``slow-full``: the same with 12,000 in flight: the most the daemon completes, its loop full.
- ``slow-rate``: the same, submitted at 1,000 runs/s (what the daemon keeps up with, and how late its loop is).
- ``http``: the same, and every package delivered over HTTP to the loopback receiver (checked once each).
- ``far``: the instant pipeline against a database 50 ms away (a delay proxy on loopback), closed loop.
- ``far-rate``: the same at a fixed rate (open loop): the submissions must keep the rate.

Each scenario gets a fresh database on the server, migrated, and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.engine import make_url

from bench.run import _admin, database_url, machine
from sagad.store.migrate import upgrade

TCP_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
FAR_DELAY_MS = 25  # each way: a 50 ms round trip
FAR_RUNS = 20_000
MIX = ["--fail-qc", "0.04", "--fail-delivery", "0.03", "--invalid", "0.03"]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    options: tuple[str, ...]
    far: bool = False
    """Whether the daemon and the load test reach the database through the delay proxy."""


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "slow",
            ("--runs", "100000", "--step-latency", "1000:3000", "--daemon-option=--max-inflight=7500", *MIX),
        ),
        Scenario(
            "slow-full",
            ("--runs", "60000", "--step-latency", "1000:3000", "--daemon-option=--max-inflight=12000", *MIX),
        ),
        Scenario(
            "slow-rate",
            (
                "--runs",
                "60000",
                "--rate",
                "1000",
                "--step-latency",
                "1000:3000",
                "--daemon-option=--max-inflight=12000",
                *MIX,
            ),
        ),
        Scenario(
            "http",
            (
                "--runs",
                "40000",
                "--step-latency",
                "1000:3000",
                "--deliver-http",
                "--daemon-option=--max-inflight=12000",
                *MIX,
            ),
        ),
        Scenario("far", ("--runs", str(FAR_RUNS), *MIX), far=True),
        Scenario("far-rate", ("--runs", "3000", "--rate", "50", *MIX), far=True),
    )
}


@contextmanager
def delay_proxy(server: str, delay_ms: int = FAR_DELAY_MS) -> Iterator[str]:
    """A delay proxy process in front of ``server`` (TCP); the host:port to connect to instead."""
    parsed = make_url(server)
    upstream = f"{parsed.host or '127.0.0.1'}:{parsed.port or 5432}"
    command = [sys.executable, "-m", "sagad.loadtest.distance", "--upstream", upstream]
    command += ["--delay-ms", str(delay_ms)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proxy:
        try:
            assert proxy.stdout is not None
            line = proxy.stdout.readline()
            yield line.rsplit(" ", 1)[-1].strip()
        finally:
            proxy.terminate()


def loadtest(url: str, options: Sequence[str]) -> dict[str, Any]:
    """``sagad loadtest ... --daemons 1 --json`` in a folder of its own; its report."""
    with tempfile.TemporaryDirectory(prefix="sagad-scenario-") as folder:
        env = {**os.environ, "SAGAD_DATABASE_URL": url}
        done = subprocess.run(
            [sys.executable, "-m", "sagad", "loadtest", *options, "--daemons", "1", "--json"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if "{" not in done.stdout:
        raise SystemExit(f"sagad loadtest failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    return report


def measure(server: str, scenario: Scenario, delay_ms: int = FAR_DELAY_MS) -> dict[str, Any]:
    name = f"sagad_scenario_{os.getpid()}_{scenario.name.replace('-', '_')}"
    url = database_url(server, name)
    anyio.run(_admin, server, f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        if scenario.far:
            with delay_proxy(server, delay_ms) as address:
                far_url = make_url(url).set(host=address.split(":")[0], port=int(address.split(":")[1]))
                report = loadtest(far_url.render_as_string(hide_password=False), scenario.options)
        else:
            report = loadtest(url, scenario.options)
    finally:
        anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    latency = report["latency_ms"].get("completed", {})
    return {
        "scenario": scenario.name,
        "command": "sagad loadtest " + " ".join(scenario.options) + " --daemons 1",
        "ok": report["ok"],
        "runs": report["runs"],
        "runs_per_s": report["throughput_runs_per_s"],
        "steady_runs_per_s": report.get("steady_runs_per_s"),
        "completed_p50_ms": latency.get("p50"),
        "completed_p99_ms": latency.get("p99"),
        "daemons": report.get("daemons"),
        "deliveries": report.get("deliveries"),
        "round_trip_ms": 2 * delay_ms if scenario.far else None,
        "submitted_per_s": report.get("submitted_per_s"),
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r['scenario']:9} {r['runs']:>6} runs  {r['runs_per_s']:>8,.1f} runs/s "
            f"({r['steady_runs_per_s']:,.0f} steady)  ok={r['ok']}"
        )
        lines.append(f"          completed p50 {r['completed_p50_ms']} ms, p99 {r['completed_p99_ms']} ms")
        if r["round_trip_ms"]:
            p50 = r["completed_p50_ms"] or 0
            lines.append(f"          p50 = {p50 / r['round_trip_ms']:.1f} round trips of {r['round_trip_ms']} ms")
        if r["daemons"]:
            lines.append(f"          daemon: {r['daemons']}")
        if r["deliveries"]:
            lines.append(f"          deliveries: {r['deliveries']}")
        lines.append(f"          {r['command']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="Scenarios to run, comma-separated.")
    parser.add_argument("--database-url", default=TCP_SERVER, help="A server reachable over TCP (for the proxy).")
    parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
    parser.add_argument("--delay-ms", type=int, default=FAR_DELAY_MS, help="The far scenarios' delay each way.")
    parser.add_argument("--far-rate", type=float, default=50, help="Runs per second of far-rate.")
    parser.add_argument("--far-runs", type=int, default=FAR_RUNS, help="Runs of far (closed loop).")
    parser.add_argument(
        "--daemon-option", action="append", default=[], help="An option for the daemon, as OPTION=VALUE (repeatable)."
    )
    args = parser.parse_args()
    chosen = [SCENARIOS[name] for name in args.only.split(",") if name]
    extra = tuple(f"--daemon-option={option}" for option in args.daemon_option)
    if args.far_runs != FAR_RUNS:
        sized = ("--runs", str(args.far_runs), *MIX)
        chosen = [Scenario(s.name, sized, far=True) if s.name == "far" else s for s in chosen]
    if args.far_rate != 50:
        rated = ("--runs", str(round(args.far_rate * 60)), "--rate", f"{args.far_rate:g}", *MIX)
        chosen = [Scenario(s.name, rated, far=True) if s.name == "far-rate" else s for s in chosen]
    chosen = [Scenario(s.name, (*s.options, *extra), far=s.far) for s in chosen]
    results = [measure(args.database_url, scenario, args.delay_ms) for scenario in chosen]
    if args.json:
        print(json.dumps({"machine": machine(args.database_url), "results": results}, indent=2))
    else:
        print(render(results))


if __name__ == "__main__":
    main()
