"""The connection budget's cost, a/b alternated: ``bench.run`` at each ``--max-connections`` in turn.

``python -m bench.budget [--budgets 10,26,10/transaction] [--rounds 3] [--runs 10000] [--database-url URL]``
measures sagad (one daemon, ``sagad loadtest``) and the raw ceiling once per variant per round, the
variants alternated within each round, and prints each measurement and the median a/b per variant. A
variant ``B/transaction`` also runs the daemon as behind a pooler (``--pooler transaction``: no
statement cache, limits per transaction) against the same server: the cost of pooled mode to sagad;
``B/auto:C`` sets ``--commits-in-flight C``. A variant ``B/pgbouncer`` puts a real PgBouncer in
transaction mode (started for the measurement, its pool the budget plus the load test's own 8) between
the server and both the loadtest's daemon (``--pooler auto``, which finds it) and the load test: what
the pooler's extra hop and the lost LISTEN add. The ceiling always runs straight against the server,
so that the a/b ratios of all variants share a denominator.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from typing import Any

from bench.bouncer import PgBouncer
from bench.run import default_server_url, measure_all

LOADTEST_CONNECTIONS = 8  # the load test's own client pool, beside the daemon's budget


def measure_variant(server: str, runs: int, connections: int, pooler: str) -> dict[str, Any]:
    """``bench.run``'s sagad and ceiling, sagad through a PgBouncer of its own for ``pgbouncer``."""
    if pooler != "pgbouncer":
        return measure_all(server, runs, 0)
    bouncer = PgBouncer(server, pool_size=connections + LOADTEST_CONNECTIONS).start()
    try:
        return measure_all(server, runs, 0, sagad_route=bouncer.url_for)
    finally:
        bouncer.destroy()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__)
    parser.add_argument("--budgets", default="10,26", help="Comma-separated --max-connections[/--pooler] values.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; each measures every budget once.")
    parser.add_argument("--runs", type=int, default=10_000, help="Runs per measurement.")
    parser.add_argument("--database-url", help="A server to create the databases on.")
    args = parser.parse_args(argv)
    budgets = args.budgets.split(",")
    server = args.database_url or default_server_url()
    ratios: dict[str, list[float]] = {b: [] for b in budgets}
    rates: dict[str, list[float]] = {b: [] for b in budgets}
    for round_ in range(args.rounds):
        for budget in budgets if round_ % 2 == 0 else reversed(budgets):
            connections, _, rest = budget.partition("/")
            pooler, _, commits = rest.partition(":")
            os.environ["SAGAD_MAX_CONNECTIONS"] = connections  # the loadtest's daemon inherits them
            os.environ["SAGAD_POOLER"] = "auto" if pooler in ("", "pgbouncer") else pooler
            os.environ.pop("SAGAD_COMMITS_IN_FLIGHT", None)
            if commits:
                os.environ["SAGAD_COMMITS_IN_FLIGHT"] = commits
            report = measure_variant(server, args.runs, int(connections), pooler)
            sagad, ratio = report["sagad"], report["ratios"]["a/b"]
            ratios[budget].append(ratio)
            rates[budget].append(sagad["runs_per_s"])
            p50 = sagad["latency_ms"].get("completed", {}).get("p50", 0)
            print(
                f"round {round_ + 1} budget {budget:>14}: sagad {sagad['runs_per_s']:>7.1f} runs/s"
                f" (p50 {p50:.0f} ms), ceiling {report['ceiling']['runs_per_s']:>7.1f}, a/b {ratio:.2f}",
                flush=True,
            )
    for budget in budgets:
        print(
            f"budget {budget:>14}: a/b median {statistics.median(ratios[budget]):.2f} ({ratios[budget]}),"
            f" sagad median {statistics.median(rates[budget]):.0f} runs/s"
        )


if __name__ == "__main__":
    main()
