"""A bulk cancel of 10,000 runs in flight under load, measured end to end (issue 17, item 5).

    python -m bench.bulk_cancel [--in-flight 10000] [--rate 100] [--daemons 2] [--lease-seconds 6]
                                [--step-latency 3000:8000] [--daemon-option OPTION=VALUE ...]
                                [--keep-logs DIR] [--database-url URL] [--json]

Creates a throwaway database on the server and migrates it; starts the daemons as processes with slow
steps; keeps a load going (``--rate`` runs/s submitted through ``sagad.Client``) and adds a burst,
until at least ``--in-flight`` runs are running; then runs the operator's command,
``sagad runs cancel --status running --yes --reason ...``, as a process. It reports how long the command
took, the time from its start until every run it cancelled was compensated, whether any of them
completed first or kept business rows, whether the load kept completing, and ``sagad audit``. The
promise: all of them compensated within a lease plus a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, chdir
from dataclasses import asdict, dataclass, field
from datetime import datetime

import anyio
import asyncpg

from bench.run import _admin, database_url, default_server_url, machine
from sagad import Client
from sagad.cli.loadtest import started_daemons
from sagad.content.samples import Ending, sample_brief
from sagad.domain.steps import BUSINESS_TABLES
from sagad.store.db import asyncpg_dsn
from sagad.store.migrate import upgrade

SUBMIT_BATCH = 500
POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Settings:
    in_flight: int
    rate: float
    daemons: int
    lease_seconds: float
    step_latency: str
    settle_seconds: float
    extra_daemon_options: tuple[str, ...] = ()

    def daemon_options(self) -> list[str]:
        # Room for the burst and the load on top of it, shared by the daemons.
        per_daemon = math.ceil(self.in_flight * 1.5 / self.daemons)
        return [
            *("--lease-seconds", f"{self.lease_seconds:g}", "--simulate-latency", self.step_latency),
            *("--max-inflight", str(per_daemon), "--drain-seconds", "1"),
            *self.extra_daemon_options,
        ]


@dataclass(slots=True)
class Figures:
    command: str
    command_seconds: float = 0.0
    command_exit: int | None = None
    running_at_start: int = 0
    cancelled: dict[str, int] = field(default_factory=dict)
    """Runs with the cancel's reason, by status at the end (a run that completed first stays completed)."""
    all_marked_after_s: float | None = None
    """From the command's start to its last cancel's commit (database clock)."""
    all_compensated_after_s: float | None = None
    """From the command's start to the last cancelled run's end (database clock)."""
    observed_after_s: float | None = None
    """From the command's start until a poll saw no cancelled run left in flight (this machine's clock)."""
    business_rows_left: int = 0
    step_outputs_left: int = 0
    load_submitted_during: int = 0
    load_completed_of_those: int = 0
    load_p50_ms: float | None = None
    load_p99_ms: float | None = None
    load_claimed_p99_ms: float | None = None
    """How long the runs submitted during the cancel waited to be claimed (p99)."""
    audit_exit: int | None = None
    audit_report: str = ""

    def within_promise(self, lease_seconds: float, few: float = 5.0) -> bool:
        return self.all_compensated_after_s is not None and self.all_compensated_after_s <= lease_seconds + few


@asynccontextmanager
async def throwaway_database(server: str) -> AsyncIterator[str]:
    """A fresh, migrated database on ``server``; dropped when the block ends."""
    name = f"sagad_bulk_cancel_{os.getpid()}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    url = database_url(server, name)
    try:
        await anyio.to_thread.run_sync(upgrade, url)
        yield url
    finally:
        with anyio.move_on_after(30, shield=True):
            await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def keep_submitting(client: Client, rate: float, first_seed: int) -> None:
    """Submit completing briefs at ``rate`` runs/s, a batch every tenth of a second, until cancelled."""
    per_tick = max(1, round(rate / 10))
    started, seed = time.monotonic(), first_seed
    while True:
        await client.submit_many([sample_brief(Ending.COMPLETED, seed + n) for n in range(per_tick)])
        seed += per_tick
        await anyio.sleep(max(0.0, started + (seed - first_seed) / rate - time.monotonic()))


async def submit_burst(client: Client, runs: int) -> None:
    for start in range(0, runs, SUBMIT_BATCH):
        count = min(SUBMIT_BATCH, runs - start)
        await client.submit_many([sample_brief(Ending.COMPLETED, start + n) for n in range(count)])


async def wait_running(conn: asyncpg.Connection, at_least: int, seconds: float) -> int:
    """Poll until ``at_least`` runs are running (a count in the database: nothing to wait on instead)."""
    with anyio.fail_after(seconds):
        while True:
            running: int = await conn.fetchval("SELECT count(*) FROM workflow_runs WHERE status = 'running'")
            if running >= at_least:
                return running
            await anyio.sleep(POLL_SECONDS)


def cancel_command(reason: str) -> list[str]:
    return ["sagad", "runs", "cancel", "--status", "running", "--yes", "--reason", reason]


async def run_cancel(url: str, reason: str, figures: Figures, done: anyio.Event) -> None:
    """The operator's command, as a process (its output dropped: one line a run)."""
    env = {**os.environ, "SAGAD_DATABASE_URL": url}
    started = time.monotonic()
    command = [sys.executable, "-m", *cancel_command(reason)]
    finished = await anyio.run_process(command, env=env, check=False, stdout=subprocess.DEVNULL)
    figures.command_seconds = round(time.monotonic() - started, 2)
    figures.command_exit = finished.returncode
    if finished.returncode != 0:
        print(finished.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
    done.set()


async def wait_all_compensated(
    conn: asyncpg.Connection, reason: str, command_done: anyio.Event, seconds: float
) -> float | None:
    """Seconds until no run with ``reason`` is left in flight (after the command ended); None on timeout.

    Prints, once a second on stderr, the cancelled runs by status: where the time goes.
    """
    started = last_shown = time.monotonic()
    with anyio.move_on_after(seconds):
        while True:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM workflow_runs WHERE cancel_reason = $1 GROUP BY status", reason
            )
            counts = {row["status"]: row["n"] for row in rows}
            now = time.monotonic()
            if now - last_shown >= 1.0:
                print(f"  {now - started:5.1f} s  cancelled so far by status: {counts}", file=sys.stderr, flush=True)
                last_shown = now
            if command_done.is_set() and not counts.keys() & {"running", "compensating"}:
                return round(now - started, 2)
            await anyio.sleep(POLL_SECONDS)
    return None


async def read_outcome(conn: asyncpg.Connection, reason: str, command_at: datetime, figures: Figures) -> None:
    """What the cancel left behind, and how the load fared from the command's start to the last compensation."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM workflow_runs WHERE cancel_reason = $1 GROUP BY 1", reason
    )
    figures.cancelled = {row["status"]: row["n"] for row in rows}
    marked_last = await conn.fetchval(
        "SELECT max(cancel_requested_at) FROM workflow_runs WHERE cancel_reason = $1", reason
    )
    if marked_last is not None:
        figures.all_marked_after_s = round((marked_last - command_at).total_seconds(), 2)
    last = await conn.fetchval(
        "SELECT max(finished_at) FROM workflow_runs WHERE cancel_reason = $1 AND status = 'compensated'", reason
    )
    if last is not None and not figures.cancelled.keys() & {"running", "compensating"}:
        figures.all_compensated_after_s = round((last - command_at).total_seconds(), 2)
    compensated = "SELECT id FROM workflow_runs WHERE cancel_reason = $1 AND status = 'compensated'"
    for table in BUSINESS_TABLES:
        figures.business_rows_left += await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE run_id IN ({compensated})", reason
        )
    figures.step_outputs_left = await conn.fetchval(
        f"SELECT count(*) FROM step_outputs WHERE run_id IN ({compensated})", reason
    )
    window_end = last or command_at
    load = await conn.fetch(
        "SELECT status, extract(epoch FROM finished_at - submitted_at) * 1000 AS ms, "
        "extract(epoch FROM started_at - submitted_at) * 1000 AS wait_ms FROM workflow_runs "
        "WHERE cancel_reason IS NULL AND submitted_at BETWEEN $1 AND $2",
        command_at,
        window_end,
    )
    latencies = sorted(float(row["ms"]) for row in load if row["status"] == "completed")
    figures.load_submitted_during = len(load)
    figures.load_completed_of_those = len(latencies)
    if len(latencies) >= 2:
        figures.load_p50_ms = round(statistics.median(latencies))
        figures.load_p99_ms = round(statistics.quantiles(latencies, n=100)[98])
    waits = sorted(float(row["wait_ms"]) for row in load if row["wait_ms"] is not None)
    if len(waits) >= 2:
        figures.load_claimed_p99_ms = round(statistics.quantiles(waits, n=100)[98])


async def audit(url: str, figures: Figures) -> None:
    env = {**os.environ, "SAGAD_DATABASE_URL": url}
    done = await anyio.run_process([sys.executable, "-m", "sagad", "audit", "--since", "1h"], env=env, check=False)
    figures.audit_exit = done.returncode
    figures.audit_report = (done.stdout + done.stderr).decode(errors="replace").strip()[-1500:]


async def measure(server: str, settings: Settings) -> Figures:
    reason = f"bench bulk cancel {uuid.uuid4().hex[:8]}"
    figures = Figures(command=" ".join(cancel_command(repr(reason))))
    async with throwaway_database(server) as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with started_daemons(url, settings.daemons, settings.daemon_options()), Client(url) as client:
                async with anyio.create_task_group() as load:
                    load.start_soon(keep_submitting, client, settings.rate, 10_000_000)
                    async with Client(url) as burst:
                        await submit_burst(burst, settings.in_flight + settings.in_flight // 20)
                    figures.running_at_start = await wait_running(conn, settings.in_flight, 120)
                    command_at: datetime = await conn.fetchval("SELECT now()")
                    command_done = anyio.Event()
                    async with anyio.create_task_group() as cancel:
                        cancel.start_soon(run_cancel, url, reason, figures, command_done)
                        figures.observed_after_s = await wait_all_compensated(
                            conn, reason, command_done, settings.lease_seconds + 60
                        )
                    # The load goes on a while, so that the runs submitted during the cancel can end.
                    await anyio.sleep(settings.settle_seconds)
                    load.cancel_scope.cancel()
                await read_outcome(conn, reason, command_at, figures)
                await audit(url, figures)
        finally:
            await conn.close()
    return figures


def render(settings: Settings, figures: Figures) -> str:
    c = figures.cancelled
    lines = [
        f"daemons {settings.daemons}, lease {settings.lease_seconds:g} s, step latency {settings.step_latency} ms, "
        f"load {settings.rate:g} runs/s through sagad.Client; daemon options: {' '.join(settings.daemon_options())}",
        f"running when the cancel started: {figures.running_at_start}",
        f"command: {figures.command}",
        f"  took {figures.command_seconds} s, exit {figures.command_exit}; its last cancel committed "
        f"{figures.all_marked_after_s} s after its start",
        f"cancelled runs: {sum(c.values())}  by status at the end: {c}",
        f"all compensated {figures.all_compensated_after_s} s after the command's start "
        f"(polled: {figures.observed_after_s} s); promise: within {settings.lease_seconds:g} + 5 s: "
        f"{'met' if figures.within_promise(settings.lease_seconds) else 'NOT met'}",
        f"rows left of compensated cancelled runs: {figures.business_rows_left} business, "
        f"{figures.step_outputs_left} step outputs",
        f"load: of the {figures.load_submitted_during} runs submitted during the cancel, "
        f"{figures.load_completed_of_those} completed (p50 {figures.load_p50_ms} ms, p99 {figures.load_p99_ms} ms), "
        f"claimed within {figures.load_claimed_p99_ms} ms (p99)",
        f"audit: exit {figures.audit_exit}" + ("" if figures.audit_exit == 0 else f"\n{figures.audit_report}"),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_cancel", description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=10_000, help="Runs running when the cancel starts.")
    parser.add_argument("--rate", type=float, default=100.0, help="The load: runs submitted per second throughout.")
    parser.add_argument("--daemons", type=int, default=2, help="Daemon processes.")
    parser.add_argument("--lease-seconds", type=float, default=6.0, help="The daemons' --lease-seconds.")
    parser.add_argument("--step-latency", default="3000:8000", help="The daemons' --simulate-latency (MEDIAN:P99 ms).")
    parser.add_argument("--settle-seconds", type=float, default=25.0, help="Load kept going after the cancel ends.")
    parser.add_argument(
        "--daemon-option", action="append", default=[], help="An option for the daemons, as OPTION=VALUE (repeatable)."
    )
    parser.add_argument("--database-url", help="A server to create the database on.")
    parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
    parser.add_argument("--keep-logs", metavar="DIR", help="Keep the daemons' logs in DIR/.sagad/ (default: dropped).")
    args = parser.parse_args(argv)
    settings = Settings(
        args.in_flight,
        args.rate,
        args.daemons,
        args.lease_seconds,
        args.step_latency,
        args.settle_seconds,
        tuple(args.daemon_option),
    )
    server = args.database_url or default_server_url()
    # The daemons keep their logs in ./.sagad/: a folder of this measurement's own.
    with tempfile.TemporaryDirectory(prefix="sagad-bulk-cancel-") as folder, chdir(args.keep_logs or folder):
        figures = anyio.run(measure, server, settings)
    if args.json:
        print(json.dumps({"machine": machine(server), "settings": asdict(settings), **asdict(figures)}, indent=2))
    else:
        print(render(settings, figures))


if __name__ == "__main__":
    main()
