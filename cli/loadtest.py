"""``sagad loadtest``: drive daemons with a known mix of briefs and report how they did."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
import typer
from anyio.abc import Process
from rich.progress import Progress as Bar
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from sagad.cli.common import DatabaseUrl, fail, migrated_database, resolve_url, run_async
from sagad.cli.load import Mix, Progress, follow, patiently, submit_all, submitting_clients
from sagad.cli.report import Deliveries, LoadReport
from sagad.cli.vitals import Vitals, Watched, watch
from sagad.domain.runs import RunId
from sagad.endpoint import announced, answer
from sagad.loadtest.receiver import Receiver
from sagad.store.audit import audit_database
from sagad.store.runs import RunStore

Fraction = Annotated[float, typer.Option(min=0.0, max=1.0)]


LOADTEST_APPLICATION = "sagad-loadtest"
"""The load test's own connections, told apart from the daemons' when it counts theirs."""


def _named(url: str, application: str) -> str:
    return make_url(url).update_query_dict({"application_name": application}).render_as_string(hide_password=False)


async def _fresh_journal() -> Path:
    """Where the load test's delivery endpoint keeps what it accepted: new for each load test."""
    journal = anyio.Path(".sagad") / "loadtest-deliveries.jsonl"
    await journal.parent.mkdir(exist_ok=True)
    await journal.write_bytes(b"")
    return Path(journal)


def _daemon_command(n: int, options: list[str]) -> list[str]:
    # The URL goes through the environment: a command line (and its password) is visible to `ps`.
    return [sys.executable, "-m", "sagad", "run", "--worker-id", f"loadtest-{n}",
            "--metrics-addr", "127.0.0.1:0", *options]  # fmt: skip


@asynccontextmanager
async def started_daemons(url: str, count: int, options: list[str]) -> AsyncIterator[list[Watched]]:
    """``count`` daemon processes on ``url``, each ready; stopped (SIGTERM, then drained) when the block ends."""
    logs = anyio.Path(".sagad")
    if count:
        try:
            await logs.mkdir(exist_ok=True)
        except OSError as error:
            fail(f"cannot create the folder of the daemons' logs {await logs.absolute()}: {error.strerror or error}")
    processes: list[Process] = []
    started: list[Watched] = []
    try:
        for n in range(count):
            log = logs / f"loadtest-daemon-{n}.log"
            await log.write_bytes(b"")
            async with await anyio.open_file(log, "ab") as out:
                fd = out.wrapped.fileno()
                env = {**os.environ, "SAGAD_DATABASE_URL": url}
                processes.append(await anyio.open_process(_daemon_command(n, options), stdout=fd, stderr=fd, env=env))
            started.append(Watched(processes[-1].pid, await _wait_ready(processes[-1], log)))
        yield started
    finally:
        with anyio.move_on_after(30, shield=True):
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                await process.wait()


async def _wait_ready(process: Process, log: anyio.Path, seconds: float = 60) -> str:
    """Wait until the daemon answers /readyz (it has claimed), so that its start-up is not measured as latency.

    Returns the daemon's endpoint.
    """
    with anyio.move_on_after(seconds):
        while process.returncode is None:
            url = announced(await log.read_text(errors="replace"))
            if url is not None and await anyio.to_thread.run_sync(answer, f"{url}/readyz") == 200:
                return url
            await anyio.sleep(0.05)
        fail(f"a daemon exited with {process.returncode} at start; see {log}")
    fail(f"a daemon was not ready (its /readyz) within {seconds:g} s; see {log}")


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
    step_latency: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_LOADTEST_STEP_LATENCY",
            help="MEDIAN_MS:P99_MS: the started daemons wait that long (lognormal) before every step's call, "
            "as real services would (their --simulate-latency).",
            show_default=False,
        ),
    ] = None,
    deliver_http: Annotated[
        bool,
        typer.Option(
            "--deliver-http",
            envvar="SAGAD_LOADTEST_DELIVER_HTTP",
            help="Start a delivery endpoint on loopback; every package is POSTed to it (and checked once each).",
        ),
    ] = False,
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
    if (step_latency or deliver_http) and not daemons:
        fail("--step-latency and --deliver-http configure the daemons the load test starts: give --daemons 1 or more")
    options = [*(daemon_option or [])]
    if step_latency:
        options += ["--simulate-latency", step_latency]
    url = resolve_url(database_url)

    async def main() -> int:
        async with AsyncExitStack() as stack:
            destination = None
            receiver = None
            if deliver_http:
                receiver = await stack.enter_async_context(Receiver(await _fresh_journal()))
                destination = f"{receiver.url}/packages"
                options.extend(["--delivery-hosts", f"127.0.0.1:{receiver.port}"])
            db = await stack.enter_async_context(migrated_database(_named(url, LOADTEST_APPLICATION), max_size=4))
            clients = await stack.enter_async_context(submitting_clients(_named(url, LOADTEST_APPLICATION)))
            watched = await stack.enter_async_context(started_daemons(url, daemons, options))
            vitals = Vitals()
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
                        if watched:
                            tg.start_soon(watch, db, watched, vitals, LOADTEST_APPLICATION)
                        tg.start_soon(submit_all, clients, mix.shuffled(), rate, progress, ids, destination)
                        await follow(store, ids, runs, progress, show)
                        tg.cancel_scope.cancel()
            audit = await patiently(partial(audit_database, db), progress.outages)
            deliveries = None if receiver is None else Deliveries.check(receiver.summary(), progress.finished)
        report = LoadReport.build(
            mix,
            list(progress.finished.values()),
            audit,
            vitals=vitals if watched else None,
            deliveries=deliveries,
            outages=progress.outages,
        )
        print(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
        if plot is not None:
            from sagad.cli.plot import draw  # noqa: PLC0415  (matplotlib is an optional extra)

            draw(list(progress.finished.values()), plot)
        return 0 if report.ok else 1

    run_async(main)
