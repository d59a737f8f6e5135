"""``sagad loadtest``: drive daemons with a known mix of briefs and report how they did."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
import typer
from anyio.abc import Process
from rich.progress import Progress as Bar
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from sagad.cli.common import DatabaseUrl, fail, migrated_database, resolve_url, run_async
from sagad.cli.load import Mix, Progress, follow, patiently, submit_all
from sagad.cli.report import LoadReport
from sagad.domain.runs import RunId
from sagad.store.audit import audit_database
from sagad.store.runs import RunStore

Fraction = Annotated[float, typer.Option(min=0.0, max=1.0)]


def _daemon_command(n: int, options: list[str]) -> list[str]:
    # The URL goes through the environment: a command line (and its password) is visible to `ps`.
    return [sys.executable, "-m", "sagad", "run", "--worker-id", f"loadtest-{n}",
            "--metrics-addr", "127.0.0.1:0", *options]  # fmt: skip


@asynccontextmanager
async def started_daemons(url: str, count: int, options: list[str]) -> AsyncIterator[list[Process]]:
    """``count`` daemon processes on ``url``; stopped (SIGTERM, then drained) when the block ends."""
    logs = anyio.Path(".sagad")
    await logs.mkdir(exist_ok=True)
    processes: list[Process] = []
    try:
        for n in range(count):
            log = logs / f"loadtest-daemon-{n}.log"
            await log.write_bytes(b"")
            async with await anyio.open_file(log, "ab") as out:
                fd = out.wrapped.fileno()
                env = {**os.environ, "SAGAD_DATABASE_URL": url}
                processes.append(await anyio.open_process(_daemon_command(n, options), stdout=fd, stderr=fd, env=env))
            await _wait_running(processes[-1], log)
        yield processes
    finally:
        with anyio.move_on_after(30, shield=True):
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                await process.wait()


async def _wait_running(process: Process, log: anyio.Path) -> None:
    """Wait until the daemon says it runs, so that its start-up is not measured as latency."""
    with anyio.fail_after(60):
        while b" running (lease" not in await log.read_bytes():
            if process.returncode is not None:
                fail(f"a daemon exited with {process.returncode} at start; see {log}")
            await anyio.sleep(0.05)


def loadtest_command(
    runs: Annotated[
        int, typer.Option(min=1, max=10_000_000, envvar="SAGAD_LOADTEST_RUNS", help="Runs to submit.")
    ] = 1000,
    fail_qc: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, envvar="SAGAD_LOADTEST_FAIL_QC", help="Fraction of briefs built to fail QC."),
    ] = 0.0,
    fail_delivery: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, envvar="SAGAD_LOADTEST_FAIL_DELIVERY", help="Fraction built to be rejected at delivery."
        ),
    ] = 0.0,
    invalid: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, envvar="SAGAD_LOADTEST_INVALID", help="Fraction built to fail normalize_brief."),
    ] = 0.0,
    rate: Annotated[
        float,
        typer.Option(
            min=0.0, envvar="SAGAD_LOADTEST_RATE", help="Runs submitted per second (open loop); 0: as fast as possible."
        ),
    ] = 0.0,
    daemons: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            envvar="SAGAD_LOADTEST_DAEMONS",
            help="Daemon processes to start for the test (0: use running ones).",
        ),
    ] = 1,
    daemon_option: Annotated[
        list[str] | None,
        typer.Option(
            "--daemon-option",
            envvar="SAGAD_LOADTEST_DAEMON_OPTIONS",
            help="An option passed to each started daemon, e.g. --daemon-option=--batch-limit=50.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, envvar="SAGAD_LOADTEST_TIMEOUT", help="Seconds to wait for every run to end.")
    ] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", envvar="SAGAD_LOADTEST_JSON", help="Print JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            envvar="SAGAD_LOADTEST_PLOT", dir_okay=False, help="Draw throughput and latency over time into this PNG."
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Submit RUNS briefs with the given failure mix, wait for every run to end, report and audit."""
    try:
        mix = Mix.of(runs, fail_qc, fail_delivery, invalid)
    except ValueError as error:
        fail(str(error))
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        fail("--plot needs matplotlib: pip install 'sagad[plot]'")
    url = resolve_url(database_url)

    async def main() -> int:
        async with migrated_database(url) as db, started_daemons(url, daemons, daemon_option or []):
            store = RunStore(db)
            progress = Progress()
            ids: list[RunId] = []
            with Bar(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                disable=as_json or not sys.stderr.isatty(),
                console=None,
            ) as bar:
                task = bar.add_task("starting")

                def show() -> None:
                    counts = progress.counts()
                    done = len(progress.finished)
                    elapsed = max(time.monotonic() - progress.started, 1e-9)
                    bar.update(
                        task,
                        description=(
                            f"submitted {progress.submitted}  in flight {progress.submitted - done}  "
                            f"completed {counts['completed']}  compensated {counts['compensated']}  "
                            f"{done / elapsed:,.0f} runs/s"
                        ),
                    )

                with anyio.move_on_after(timeout):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(submit_all, store, mix.shuffled(), rate, progress, ids)
                        await follow(store, ids, runs, progress, show)
            audit = await patiently(partial(audit_database, db), progress.outages)
        report = LoadReport.build(mix, list(progress.finished.values()), audit, progress.outages)
        print(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
        if plot is not None:
            from sagad.cli.plot import draw  # noqa: PLC0415  (matplotlib is an optional extra)

            draw(list(progress.finished.values()), plot)
        return 0 if report.ok else 1

    run_async(main)
