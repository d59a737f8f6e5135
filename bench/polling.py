"""The latency of polling instead of LISTEN: ``sagad loadtest`` at a low rate, direct and through PgBouncer.

``python -m bench.polling [--rounds 2] [--runs 1000] [--rate 20] [--budget 10] [--database-url URL]``
runs one daemon at a low open-loop rate, where a run waits for a claim rather than for a slot, once
straight against the server (LISTEN wakes the claimer) and once through a PgBouncer in transaction mode
(no LISTEN: the claimer polls), alternated within each round on fresh databases, and prints the p50
and p99 latency of completed runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence

import anyio

from bench.bouncer import PgBouncer
from bench.budget import LOADTEST_CONNECTIONS
from bench.run import _admin, database_url, default_server_url, measure_sagad
from sagad.store.migrate import upgrade

ROUTES = ("direct", "pgbouncer")


def completed_latency(server: str, route: str, runs: int, rate: float, budget: int) -> tuple[float, float]:
    """p50 and p99 (ms) of completed runs for one loadtest on a database of its own."""
    name = f"sagad_polling_{os.getpid()}"
    url = database_url(server, name)
    anyio.run(_admin, server, f'CREATE DATABASE "{name}"')
    bouncer = PgBouncer(server, pool_size=budget + LOADTEST_CONNECTIONS).start() if route == "pgbouncer" else None
    try:
        upgrade(url)
        report = measure_sagad(bouncer.url_for(url) if bouncer else url, runs, rate)
    finally:
        if bouncer is not None:
            bouncer.destroy()
        anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    completed = report["latency_ms"]["completed"]
    return completed["p50"], completed["p99"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.polling", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds; each measures both routes once.")
    parser.add_argument("--runs", type=int, default=1000, help="Runs per measurement.")
    parser.add_argument("--rate", type=float, default=20, help="Runs submitted per second.")
    parser.add_argument("--budget", type=int, default=10, help="The daemon's --max-connections.")
    parser.add_argument("--database-url", help="A server to create the databases on.")
    args = parser.parse_args(argv)
    server = args.database_url or default_server_url()
    os.environ["SAGAD_MAX_CONNECTIONS"] = str(args.budget)  # the loadtest's daemon inherits them
    os.environ["SAGAD_POOLER"] = "auto"
    p50s: dict[str, list[float]] = {route: [] for route in ROUTES}
    for round_ in range(args.rounds):
        for route in ROUTES if round_ % 2 == 0 else reversed(ROUTES):
            p50, p99 = completed_latency(server, route, args.runs, args.rate, args.budget)
            p50s[route].append(p50)
            print(f"round {round_ + 1} {route:>9}: completed p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    for route in ROUTES:
        print(f"{route:>9}: completed p50 median {statistics.median(p50s[route]):.0f} ms ({p50s[route]})")


if __name__ == "__main__":
    main()
