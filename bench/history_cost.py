"""What each run's history costs sagad's own SQL: the ceiling (bench.ceiling) a/b, history off and on.

``python -m bench.history_cost [--runs N] [--rounds R] [--database-url URL]`` creates a fresh migrated
database per trial, alternates trials with the history off (the triggers of migration 0004 disabled,
and the step and compensation statements without their history: no call measures in the outputs'
rows, no failed calls, commits, undos or deletions kept) and on, and prints each trial's runs/s and
the median ratio. The ceiling replays the daemon's statements raw, with no daemon around them, so the
ratio is an upper bound on what the history costs a daemon end to end. ``--only`` toggles only the
triggers named, the statements' history staying on.
"""

from __future__ import annotations

import argparse
import os
import statistics
from functools import partial

import anyio

from bench.ceiling import measure_ceiling
from bench.run import FAIL_DELIVERY, FAIL_QC, INVALID, _admin, _checkpoint, database_url, default_server_url
from sagad.cli.load import Mix
from sagad.store.migrate import upgrade

TRIGGERS = ("workflow_runs_history_on_update", "workflow_runs_history_on_insert", "workflow_runs_finished")


def trial(
    server: str,
    runs: int,
    with_triggers: bool,
    number: int,
    toggled: tuple[str, ...] = TRIGGERS,
    *,
    statements_toggled: bool = True,
) -> float:
    name = f"sagad_history_cost_{os.getpid()}_{number}"
    url = database_url(server, name)
    anyio.run(_admin, server, f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        if not with_triggers:
            anyio.run(_admin, url, *(f"ALTER TABLE workflow_runs DISABLE TRIGGER {t}" for t in toggled))
        anyio.run(_checkpoint, server)
        outcomes = Mix.of(runs, FAIL_QC, FAIL_DELIVERY, INVALID).shuffled()
        keeps_history = with_triggers or not statements_toggled
        return anyio.run(partial(measure_ceiling, url, outcomes, keeps_history=keeps_history)).runs_per_s
    finally:
        anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="A server to create the databases on (any database of it).")
    parser.add_argument("--only", choices=TRIGGERS, action="append", help="Toggle only these triggers (repeatable).")
    options = parser.parse_args()
    server = options.database_url or default_server_url()
    ratios = []
    for round_ in range(options.rounds):
        # Alternated, and which goes first alternates too: a trend of the machine favours neither.
        order = (False, True) if round_ % 2 == 0 else (True, False)
        toggled = tuple(options.only or TRIGGERS)
        rates = {
            on: trial(server, options.runs, on, 2 * round_ + index, toggled, statements_toggled=not options.only)
            for index, on in enumerate(order)
        }
        ratios.append(rates[True] / rates[False])
        print(
            f"round {round_ + 1}: off {rates[False]:.1f} runs/s, on {rates[True]:.1f} runs/s, on/off {ratios[-1]:.3f}"
        )
    print(f"median on/off {statistics.median(ratios):.3f} over {len(ratios)} rounds")


if __name__ == "__main__":
    main()
