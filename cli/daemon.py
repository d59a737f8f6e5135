"""``sagad run``: the daemon in the foreground, with its HTTP endpoint and signal handling."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Annotated

import anyio
import typer
from anyio.abc import TaskStatus

from sagad.cli.common import DatabaseUrl, fail, migrated_database, run_async
from sagad.cli.pipelines import PipelineNotLoaded, daemon_pipeline
from sagad.domain.runs import WorkerId
from sagad.endpoint import Endpoint, Health, announcement
from sagad.errors import ConfigError, DatabaseUnreachable
from sagad.metrics import Metrics
from sagad.store.budget import DEFAULT_CONNECTIONS, MIN_CONNECTIONS, ConnectionBudget
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.distance import MOST_INFLIGHT, NEAR_BATCH, RUNS_PER_BATCH, Depth, round_trip
from sagad.store.limits import SessionLimits
from sagad.store.pooler import Pooler
from sagad.supervisor import Settings, Supervisor

log = logging.getLogger("sagad")


def parse_hosts(value: str) -> frozenset[str]:
    """``host[:port],...`` as a set, or a message naming the option."""
    hosts = frozenset(host.strip() for host in value.split(",") if host.strip())
    for host in hosts:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if any(c.isspace() or c in "/@?#" for c in host) or (port and not port.isdigit()) or not (name or host):
            fail(f"--delivery-hosts must be HOST or HOST:PORT entries, comma-separated; got {host!r}")
    return hosts


def parse_latency(value: str) -> tuple[float, float]:
    """``MEDIAN_MS:P99_MS`` as seconds, or a message naming the option."""
    median, sep, p99 = value.partition(":")
    try:
        seconds = (float(median) / 1000, float(p99) / 1000)
    except ValueError:
        seconds = (0.0, 0.0)
    if not sep or not 0 < seconds[0] <= seconds[1] < 3600:
        fail(f"--simulate-latency must be MEDIAN_MS:P99_MS with 0 < median <= p99 (e.g. 1000:3000), got {value!r}")
    return seconds


class _OutageRepeats(logging.Filter):
    """Drops the per-attempt lines of retries caused by an outage: the store logs when it starts and ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or not isinstance(record.args, tuple):
            return True
        return not any(isinstance(arg, DatabaseUnreachable) for arg in record.args)


LISTENING_POLL_SECONDS = 1.0
POLLING_SECONDS = 0.2
"""Without LISTEN a submission waits for the next poll: 0.1 s on average, and a claim every 0.2 s per idle daemon."""

COLLECTOR_THRESHOLDS = (50_000, 20, 100)
"""Allocations before a pass of the youngest generation (at least), and passes of each before one of the next."""
OBJECTS_PER_RUN = 100
"""Objects the collector tracks for a run in flight: some 60 with slow steps (a worker task, its call, the outputs)."""


def _tune_collector(max_inflight: int) -> None:
    # What exists by now (modules, the schema, the pool) lives as long as the daemon: keep it out of
    # the collector's full passes, which otherwise pause every task for ~70 ms.
    gc.collect()
    gc.freeze()
    # Rare passes, and none while the daemon fills up to its runs in flight. A run's objects live for
    # seconds: with thousands of slow runs in flight the youngest generation holds them all, and a
    # pass costs some 0.5 µs an object, 100 ms and more. Passes start after net allocations, so a
    # threshold below what a full house of runs holds would pause the daemon again and again as it
    # fills, to find nothing. Runs make no reference cycles (tests/integration/test_reference_cycles.py),
    # so what they leave is freed at once, with or without passes, and memory stays flat (bench.soak);
    # garbage from elsewhere is collected once it is as large as the runs in flight.
    young, *older = COLLECTOR_THRESHOLDS
    gc.set_threshold(max(young, OBJECTS_PER_RUN * max_inflight), *older)


async def _fitted(
    settings: Settings,
    db: Database,
    poll_seconds: float | None,
    commits: int | None,
    batch_limit: int | None,
    max_inflight: int | None,
) -> Settings:
    """The settings that depend on the database: the poll without LISTEN, commits the pool has room for, and
    the batches and runs in flight its distance needs (unless given)."""
    budget = db.budget or ConnectionBudget.split(DEFAULT_CONNECTIONS)
    poll = poll_seconds or (LISTENING_POLL_SECONDS if db.listens else POLLING_SECONDS)
    settings = replace(
        settings,
        poll_seconds=poll,
        commits_in_flight=commits or budget.commits_in_flight,
        commit_connections=budget.commit_connections,
    )
    if batch_limit is not None and max_inflight is not None:
        return settings
    seconds = await round_trip(db)
    depth = Depth.for_round_trip(seconds)
    if depth.batch_limit > NEAR_BATCH:
        log.info("the database is %.0f ms away: batches of up to %d runs", seconds * 1000, depth.batch_limit)
    return replace(
        settings, batch_limit=batch_limit or depth.batch_limit, max_inflight=max_inflight or depth.max_inflight
    )


def connections(db: Database) -> str:
    """What the daemon opened, for its start line."""
    budget = db.budget or ConnectionBudget.split(DEFAULT_CONNECTIONS)
    route = "through a pooler in transaction mode" if db.pooled else "direct"
    sessions = ", ".join(name for name, on in (("LISTEN", db.listens), ("worker lock", db.locks)) if on) or "polling"
    return f"{budget.total} connections {route}: {budget.work} work, {budget.priority} renewals, {sessions}"


def parse_addr(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as a pair, or a message naming the option."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"--metrics-addr must be HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}")
    return host, int(port)


def open_endpoint(health: Health, metrics: Metrics, host: str, port: int) -> Endpoint:
    """The endpoint bound on ``host:port``, or a message naming the option."""
    try:
        return Endpoint(health, metrics.registry, host, port)
    except OSError as error:
        fail(f"cannot serve metrics on --metrics-addr {host}:{port}: {error.strerror or error}")


async def _watch_signals(
    stop: anyio.Event,
    scope: anyio.CancelScope,
    connecting: anyio.CancelScope,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()  # from here on a signal drains the daemon instead of killing it
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping without draining", signal.Signals(signum).name)
                scope.cancel()
            else:
                log.info("%s: draining in-flight runs", signal.Signals(signum).name)
                stop.set()
                connecting.cancel()  # a daemon still waiting for a server with room holds nothing to drain


def daemon_command(
    worker_id: Annotated[
        str | None,
        typer.Option(envvar="SAGAD_WORKER_ID", help="Name of this daemon in leases. Default: HOSTNAME-PID."),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(envvar="SAGAD_LEASE_SECONDS", min=0.5, max=3600, help="How long a claim lasts unrenewed."),
    ] = 30.0,
    max_inflight: Annotated[
        int | None,
        typer.Option(
            envvar="SAGAD_MAX_INFLIGHT",
            min=1,
            max=100_000,
            help="Runs held at once. Default: ten batches' worth (1,000 near the database).",
            show_default=False,
        ),
    ] = None,
    batch_limit: Annotated[
        int | None,
        typer.Option(
            envvar="SAGAD_BATCH_LIMIT",
            min=1,
            max=10_000,
            help="Runs per group commit at most. Default: 100 up to a 40 ms round trip to the database, "
            "then more with the round trip (250 at 100 ms, at most 500), measured at start.",
            show_default=False,
        ),
    ] = None,
    inbox_size: Annotated[
        int, typer.Option(envvar="SAGAD_INBOX_SIZE", min=1, max=100_000, help="Messages an actor inbox buffers.")
    ] = 256,
    poll_seconds: Annotated[
        float | None,
        typer.Option(
            envvar="SAGAD_POLL_SECONDS",
            min=0.01,
            max=60,
            help="Claim poll interval between wakeups. Default: 1 with LISTEN, 0.2 without (a pooler, a small budget).",
            show_default=False,
        ),
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            envvar="SAGAD_MAX_CONNECTIONS",
            min=MIN_CONNECTIONS,
            max=10_000,
            help="Connections this daemon opens at most, all uses together (pools, renewals, LISTEN, worker lock).",
        ),
    ] = DEFAULT_CONNECTIONS,
    drain_seconds: Annotated[
        float,
        typer.Option(envvar="SAGAD_DRAIN_SECONDS", min=0, max=3600, help="How long a stop waits for runs to end."),
    ] = 10.0,
    reap_seconds: Annotated[
        float,
        typer.Option(
            envvar="SAGAD_REAP_SECONDS",
            min=0,
            max=60,
            help="How often to look for dead daemons (worker lock free) and free their runs at once; 0: never.",
        ),
    ] = 0.5,
    max_attempts: Annotated[
        int,
        typer.Option(
            envvar="SAGAD_MAX_ATTEMPTS",
            min=1,
            max=1000,
            help="Claims a run may take before it is compensated as a poison run.",
        ),
    ] = 5,
    metrics_addr: Annotated[
        str,
        typer.Option(
            envvar="SAGAD_METRICS_ADDR", help="HOST:PORT of the endpoint: /metrics (Prometheus), /healthz, /readyz."
        ),
    ] = "127.0.0.1:9464",
    pipeline: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_PIPELINE",
            help="MODULE:ATTRIBUTE of a Pipeline of your own steps (looked up from this folder first). "
            "Default: the built-in pipeline.",
            show_default=False,
        ),
    ] = None,
    delivery_hosts: Annotated[
        str,
        typer.Option(
            envvar="SAGAD_DELIVERY_HOSTS",
            help="HOST or HOST:PORT entries, comma-separated, that the built-in delivery may POST packages to "
            "(a brief's destination that is an http(s) URL). Default: none.",
        ),
    ] = "",
    simulate_latency: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_SIMULATE_LATENCY",
            help="MEDIAN_MS:P99_MS: wait that long (lognormal) before every step's call, as a service would.",
            show_default=False,
        ),
    ] = None,
    undo_retry_seconds: Annotated[
        float,
        typer.Option(
            envvar="SAGAD_UNDO_RETRY_SECONDS",
            min=0,
            max=86_400,
            help="How long a run whose undo kept failing waits, compensating, before it is tried again.",
        ),
    ] = 30.0,
    commits_in_flight: Annotated[
        int | None,
        typer.Option(
            envvar="SAGAD_COMMITS_IN_FLIGHT",
            min=1,
            max=16,
            help="Commits of one step at once when the database is far (the others wait for a connection). "
            "Default: what the work pool has room for, up to 3.",
            show_default=False,
        ),
    ] = None,
    pooler: Annotated[
        Pooler,
        typer.Option(
            envvar="SAGAD_POOLER",
            help="Whether --database-url leads to a pooler in transaction mode (PgBouncer): auto finds out at start; "
            "transaction: no session features (no LISTEN, worker lock or settings at connect; statement cache off); "
            "none: the server's own sessions.",
        ),
    ] = Pooler.AUTO,
    direct_url: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_DIRECT_URL",
            help="A URL straight to the server (not through a pooler) for the sessions of LISTEN and the worker "
            "lock; within --max-connections. Default: none, the daemon polls and its runs wait for their leases.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="SAGAD_LOG_LEVEL", help="debug, info, warning or error.")] = "info",
    database_url: DatabaseUrl = None,
) -> None:
    """Run the daemon until SIGTERM or SIGINT; then drain, release leases and exit 0."""
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}.get(
        log_level.lower()
    )
    if level is None:
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OutageRepeats())
    if worker_id is not None and not (0 < len(worker_id) <= 200 and worker_id.isprintable()):
        fail("--worker-id must be 1 to 200 printable characters")
    if direct_url is not None:
        try:
            asyncpg_dsn(direct_url)
        except ConfigError as error:
            fail(f"--direct-url: {error}")
    budget = ConnectionBudget.split(max_connections)
    settings = Settings(
        worker_id=WorkerId(worker_id or f"{socket.gethostname()}-{os.getpid()}"),
        lease_seconds=lease_seconds,
        max_inflight=max_inflight or NEAR_BATCH * RUNS_PER_BATCH,
        batch_limit=batch_limit or NEAR_BATCH,
        inbox_size=inbox_size,
        poll_seconds=poll_seconds or LISTENING_POLL_SECONDS,
        drain_seconds=drain_seconds,
        max_attempts=max_attempts,
        undo_retry_seconds=undo_retry_seconds,
        reap_seconds=reap_seconds or None,
    )
    try:
        steps = daemon_pipeline(
            pipeline,
            delivery_hosts=parse_hosts(delivery_hosts),
            simulated_latency=None if simulate_latency is None else parse_latency(simulate_latency),
            max_inflight=max_inflight or MOST_INFLIGHT,
        )
    except PipelineNotLoaded as error:
        fail(str(error))
    metrics = Metrics()
    health = Health()
    host, port = parse_addr(metrics_addr)

    async def main() -> None:
        nonlocal settings
        stop = anyio.Event()
        async with anyio.create_task_group() as signals:
            # Watched from the start: a SIGTERM while the daemon still connects stops it as cleanly.
            connecting = anyio.CancelScope()
            await signals.start(_watch_signals, stop, signals.cancel_scope, connecting)
            # Every connection opened (and its types looked up) before the first run, not during it.
            limits = SessionLimits.for_lease(lease_seconds)
            async with AsyncExitStack() as opened:
                with connecting:
                    db = await opened.enter_async_context(
                        migrated_database(
                            database_url, limits=limits, budget=budget, pooler=pooler, direct_url=direct_url
                        )
                    )
                if connecting.cancel_called:
                    signals.cancel_scope.cancel()
                    return
                settings = await _fitted(settings, db, poll_seconds, commits_in_flight, batch_limit, max_inflight)
                endpoint = open_endpoint(health, metrics, host, port)
                log.info(announcement(endpoint.url))
                with endpoint:
                    _tune_collector(settings.max_inflight)
                    supervisor = Supervisor(db, settings, metrics, pipeline=steps, readiness=health)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(health.keep_beating)

                        async def supervise(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                            await supervisor.run(stop, task_status=task_status)
                            tg.cancel_scope.cancel()  # the heartbeat: the daemon is done

                        # Started once it holds its worker lock: a live twin makes it stop here, with one line.
                        await tg.start(supervise)
                        log.info(
                            "daemon %s running (lease %ss, up to %d runs, batches of %d, %s, pipeline %s)",
                            settings.worker_id,
                            lease_seconds,
                            settings.max_inflight,
                            settings.batch_limit,
                            connections(db),
                            pipeline or "built-in",
                        )
            signals.cancel_scope.cancel()
        log.info("daemon %s stopped", settings.worker_id)

    run_async(main)
