"""``sagad run``: the daemon in the foreground, with its metrics endpoint and signal handling."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from typing import Annotated

import anyio
import prometheus_client
import typer
from anyio.abc import TaskStatus

from sagad.cli.common import DatabaseUrl, fail, migrated_database, run_async
from sagad.domain.runs import WorkerId
from sagad.errors import DatabaseUnreachable
from sagad.metrics import Metrics
from sagad.store.limits import SessionLimits
from sagad.supervisor import Settings, Supervisor

log = logging.getLogger("sagad")

# One connection each for the claimer, five step actors, compensator, sampler, reaper and a release,
# and two to spare for a connection being replaced after an error. Renewals have a pool of their own,
# the submission listener and the worker lock a connection each.
POOL_SIZE = 12


class _OutageRepeats(logging.Filter):
    """Drops the per-attempt lines of retries caused by an outage: the store logs when it starts and ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or not isinstance(record.args, tuple):
            return True
        return not any(isinstance(arg, DatabaseUnreachable) for arg in record.args)


def parse_addr(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as a pair, or a message naming the option."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"--metrics-addr must be HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}")
    return host, int(port)


def serve_metrics(metrics: Metrics, addr: str) -> None:
    host, port = parse_addr(addr)
    try:
        server, _ = prometheus_client.start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as error:
        fail(f"cannot serve metrics on {addr}: {error.strerror}")
    bound_host, bound_port = server.server_address[:2]
    log.info("metrics on http://%s:%s/metrics", bound_host, bound_port)


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping without draining", signal.Signals(signum).name)
                scope.cancel()
            else:
                log.info("%s: draining in-flight runs", signal.Signals(signum).name)
                stop.set()


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
        int, typer.Option(envvar="SAGAD_MAX_INFLIGHT", min=1, max=100_000, help="Runs held at once.")
    ] = 500,
    batch_limit: Annotated[
        int,
        typer.Option(envvar="SAGAD_BATCH_LIMIT", min=1, max=10_000, help="Runs per group commit at most."),
    ] = 100,
    inbox_size: Annotated[
        int, typer.Option(envvar="SAGAD_INBOX_SIZE", min=1, max=100_000, help="Messages an actor inbox buffers.")
    ] = 64,
    poll_seconds: Annotated[
        float,
        typer.Option(envvar="SAGAD_POLL_SECONDS", min=0.01, max=60, help="Claim poll interval between wakeups."),
    ] = 1.0,
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
        str, typer.Option(envvar="SAGAD_METRICS_ADDR", help="HOST:PORT of the Prometheus endpoint.")
    ] = "127.0.0.1:9464",
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
    settings = Settings(
        worker_id=WorkerId(worker_id or f"{socket.gethostname()}-{os.getpid()}"),
        lease_seconds=lease_seconds,
        max_inflight=max_inflight,
        batch_limit=batch_limit,
        inbox_size=inbox_size,
        poll_seconds=poll_seconds,
        drain_seconds=drain_seconds,
        max_attempts=max_attempts,
        reap_seconds=reap_seconds or None,
    )
    metrics = Metrics()
    parse_addr(metrics_addr)

    async def main() -> None:
        # Every connection opened (and its types looked up) before the first run, not during it.
        limits = SessionLimits.for_lease(lease_seconds)
        async with migrated_database(database_url, max_size=POOL_SIZE, min_size=POOL_SIZE, limits=limits) as db:
            serve_metrics(metrics, metrics_addr)
            stop = anyio.Event()
            supervisor = Supervisor(db, settings, metrics)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_signals, stop, tg.cancel_scope)
                # What exists by now (modules, the schema, the pool) lives as long as the daemon: keep
                # it out of the collector's full passes, which otherwise pause every task for ~70 ms.
                gc.collect()
                gc.freeze()

                async def supervise(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                    await supervisor.run(stop, task_status=task_status)
                    tg.cancel_scope.cancel()

                # Started once it holds its worker lock: a live twin makes it stop here, with one line.
                await tg.start(supervise)
                log.info(
                    "daemon %s running (lease %ss, up to %d runs)", settings.worker_id, lease_seconds, max_inflight
                )
        log.info("daemon %s stopped", settings.worker_id)

    run_async(main)
