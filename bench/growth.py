"""Growth: what a load costs on tables that already hold many finished runs, against empty ones.

``python -m bench.growth [--sizes 0,1000000,5000000] [--runs N] [--rounds R] [--ids v4|v7] [--keep]
[--databases URL,...] [--json]`` fills, for each size, a fresh database of the server with SIZE
finished runs in SQL (``bench.fill``); then loads the sizes in turn, R times (each round starting one
size later): ``sagad loadtest --runs N --daemons 0`` against one ``sagad run`` daemon started for it
(throughput, latency of completed runs, CPU seconds per run of PostgreSQL and of the daemon, WAL per
run); then ``sagad audit --json`` once per size. Each size reports its median round, set against the
smallest size. ``--keep`` keeps the filled databases and ``--databases`` measures them again later.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from anyio.abc import Process
from sqlalchemy.engine import make_url

from bench.cpu import Sample, Server, take_sample, used_between
from bench.fill import FAILURES, ID_KINDS, IdKind, ShowProgress, fill
from bench.run import _admin, database_url, default_server_url, machine
from sagad.endpoint import announced, answer
from sagad.store.db import asyncpg_dsn, redact
from sagad.store.migrate import upgrade

TARGETS = {"throughput": 0.85, "p99": 1.25}
"""At the largest size against size 0: throughput at least 85%, completed runs' p99 at most 125%."""
BYTES_PER_RUN = 10_000
"""Disk a filled run takes (about 9.2 kB with random ids), rounded up: a fill that cannot fit is refused."""
SAMPLE_SECONDS = 0.1
DAEMON_LOG = "growth-daemon.log"
DAEMON_COMMAND = ("sagad", "run", "--worker-id", "growth-0", "--metrics-addr", "127.0.0.1:0")
"""As ``sagad loadtest --daemons 1`` starts its daemon (the database URL goes in the environment)."""

_SETTINGS = ("autovacuum", "max_wal_size", "checkpoint_timeout", "wal_compression", "data_checksums")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_room(server: str, size: int) -> None:
    """Refuse a fill the server's disk cannot hold (when the data directory is on this machine)."""
    try:
        [row] = anyio.run(_admin, server, "SELECT current_setting('data_directory') AS path")
        free = shutil.disk_usage(row["path"]).free
    except (OSError, asyncpg.PostgresError):
        return  # not a superuser, or not this machine's disk: nothing to check against
    needed = size * BYTES_PER_RUN + 2 * 2**30
    if needed > free:
        raise SystemExit(f"a fill of {size:,} runs needs about {needed / 2**30:.0f} GiB; {free / 2**30:.0f} GiB free")


async def _wait_ready(process: Process, log: anyio.Path, seconds: float = 300) -> None:
    """Until the daemon answers /readyz (a claim has completed), as ``sagad loadtest`` waits for its own."""
    with anyio.move_on_after(seconds):
        while process.returncode is None:
            url = announced(await log.read_text(errors="replace"))
            if url is not None and await anyio.to_thread.run_sync(answer, f"{url}/readyz") == 200:
                return
            await anyio.sleep(0.1)
        raise SystemExit(f"the daemon exited with {process.returncode} at start:\n{(await log.read_text())[-2000:]}")
    raise SystemExit(f"the daemon was not ready within {seconds:g} s; see {log}")


@asynccontextmanager
async def running_daemon(url: str, folder: Path) -> AsyncIterator[int]:
    """``sagad run`` as ``sagad loadtest --daemons 1`` starts it, ready; its pid. SIGTERM at the end."""
    log = anyio.Path(folder) / DAEMON_LOG
    command = [sys.executable, "-m", "sagad", *DAEMON_COMMAND[1:]]
    env = {**os.environ, "SAGAD_DATABASE_URL": url}  # not on a command line, where `ps` shows a password
    async with await anyio.open_file(log, "wb") as out:
        fd = out.wrapped.fileno()
        process = await anyio.open_process(command, stdout=fd, stderr=fd, env=env)
    try:
        await _wait_ready(process, log)
        yield process.pid
    finally:
        with anyio.move_on_after(60, shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
        if process.returncode is None:
            process.kill()


# PostgreSQL 17 moved the checkpoint counts from pg_stat_bgwriter to pg_stat_checkpointer.
_CHECKPOINTS = {
    False: "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
    True: "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
}


async def _wal(conn: asyncpg.Connection) -> dict[str, float]:
    checkpoints = _CHECKPOINTS[conn.get_server_version().major >= 17]
    row = await conn.fetchrow(
        "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS bytes, (SELECT wal_fpi FROM pg_stat_wal) AS fpi,"
        f" ({checkpoints}) AS checkpoints"
    )
    return {key: float(value) for key, value in row.items()}


async def _sample(daemon: int, server: Server | None, database: str, samples: list[Sample]) -> None:
    while True:
        samples.append(await anyio.to_thread.run_sync(take_sample, time.time(), daemon, server, database))
        await anyio.sleep(SAMPLE_SECONDS)


async def measure_load(url: str, database: str, runs: int, failures: tuple[float, float, float]) -> dict[str, Any]:
    """One daemon, ``sagad loadtest --daemons 0``; its report, with CPU and WAL per run over the load."""
    fail_qc, fail_delivery, invalid = (str(f) for f in failures)
    options = ["--runs", str(runs), "--fail-qc", fail_qc, "--fail-delivery", fail_delivery, "--invalid", invalid]
    options += ["--daemons", "0", "--json"]
    env = {**os.environ, "SAGAD_DATABASE_URL": url}
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        server = Server.of_backend(await conn.fetchval("SELECT pg_backend_pid()"))
        with tempfile.TemporaryDirectory(prefix="sagad-growth-") as folder:
            async with running_daemon(url, Path(folder)) as daemon:
                samples: list[Sample] = []
                wal_before = await _wal(conn)
                launched = time.time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_sample, daemon, server, database, samples)
                    done = await anyio.run_process(
                        [sys.executable, "-m", "sagad", "loadtest", *options], cwd=folder, env=env, check=False
                    )
                    tg.cancel_scope.cancel()
                wal_after = await _wal(conn)
                log = await anyio.Path(folder, DAEMON_LOG).read_text(errors="replace")
        stdout = done.stdout.decode()
        if "{" not in stdout:
            errors = done.stderr.decode()[-2000:]
            raise SystemExit(f"sagad loadtest failed ({done.returncode}):\n{errors}\n{log[-2000:]}")
        report: dict[str, Any] = json.loads(stdout[stdout.index("{") :])
        # The load's window as the load test measures it: first submission to last end.
        start, end, count = await conn.fetchrow(
            "SELECT extract(epoch FROM min(submitted_at))::float8, extract(epoch FROM max(finished_at))::float8,"
            " count(*) FROM workflow_runs WHERE submitted_at >= to_timestamp($1)",
            launched,
        )
    finally:
        await conn.close()
    used = used_between(samples, start, end)
    wal = {key: wal_after[key] - wal_before[key] for key in wal_before}

    def per_run(seconds: float) -> float | None:
        return None if math.isnan(seconds) else round(1000 * seconds / runs, 3)  # NaN: a server elsewhere

    completed = report["latency_ms"].get("completed", {})
    return {
        "runs": report["runs"],
        "ok": report["ok"] and count == runs,
        "outcomes": report["outcomes"],
        "seconds": report["seconds"],
        "runs_per_s": report["throughput_runs_per_s"],
        "p50_ms": completed.get("p50"),
        "p99_ms": completed.get("p99"),
        "latency_ms": report["latency_ms"],
        "cpu_ms_per_run": {
            "postgresql": per_run(used.server),
            "postgresql_this_database": per_run(used.database),
            "daemon": per_run(used.daemon),
        },
        "cpu_window_seconds": round(used.at, 3),
        "wal_per_run": {
            "kib": round(wal["bytes"] / runs / 1024, 2),
            "full_page_images": round(wal["fpi"] / runs, 2),
        },
        "checkpoints": int(wal["checkpoints"]),
        "commands": [" ".join(DAEMON_COMMAND), "sagad loadtest " + " ".join(options)],
    }


def time_audit(url: str) -> dict[str, Any]:
    """``sagad audit --json``, as an operator runs it: wall seconds and whether it came out clean."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sagad", "audit", "--json"],
        env={**os.environ, "SAGAD_DATABASE_URL": url},
        check=False,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    clean = done.returncode == 0 and json.loads(done.stdout).get("clean") is True
    return {"seconds": round(seconds, 2), "clean": clean}


@dataclass(frozen=True, slots=True)
class Filled:
    """A database holding ``size`` finished runs before the loads: filled here, or kept from an earlier run."""

    size: int
    url: str
    fill: dict[str, Any] | None
    """How the fill went; None for a database filled earlier (``--databases``)."""
    owned: bool
    """Created here, so dropped at the end (unless ``--keep``)."""

    @property
    def name(self) -> str:
        return make_url(self.url).database or ""


def fill_size(server: str, size: int, ids: IdKind | None, failures: tuple[float, float, float]) -> Filled:
    name = f"sagad_growth_{os.getpid()}_{size}"
    url = database_url(server, name)
    _check_room(server, size)
    anyio.run(_admin, server, f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        _say(f"size {size:,}: filling {name}")
        filled = anyio.run(lambda: fill(url, size, ids, failures=failures, progress=ShowProgress("  ")))
    except BaseException:
        anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raise
    _say(f"size {size:,}: filled in {filled.seconds:.0f} s, {filled.database_bytes / 2**20:,.0f} MiB")
    about = {
        "ids": filled.ids,
        "seconds": round(filled.seconds, 1),
        "insert_seconds": round(filled.insert_seconds, 1),
        "database_bytes": filled.database_bytes,
    }
    return Filled(size, url, about, owned=True)


async def _adopt(url: str) -> Filled:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # One scan of a table of millions: the finished runs (the size) and any unfinished ones.
        size, unfinished, database_bytes = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE finished_at IS NOT NULL), count(*) FILTER (WHERE finished_at IS NULL),"
            " pg_database_size(current_database()) FROM workflow_runs"
        )
    finally:
        await conn.close()
    if unfinished:
        raise SystemExit(f"{redact(url)} holds {unfinished} unfinished runs: a load would take them on")
    about = {"ids": "kept", "seconds": 0.0, "insert_seconds": 0.0, "database_bytes": database_bytes}
    return Filled(size, url, about, owned=False)


def _median_load(loads: list[dict[str, Any]]) -> dict[str, Any]:
    """The load of median throughput, with the median p50 and p99 of all (each round is noisy on its own)."""

    def median(key: str) -> float | None:
        values = sorted(load[key] for load in loads if load[key] is not None)
        return values[(len(values) - 1) // 2] if values else None

    middle = sorted(loads, key=lambda load: load["runs_per_s"])[(len(loads) - 1) // 2]
    return {**middle, "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms")}


def measure_all(
    server: str,
    sizes: list[int],
    runs: int,
    ids: IdKind | None,
    failures: tuple[float, float, float],
    *,
    keep: bool,
    rounds: int,
    databases: list[str],
) -> dict[str, Any]:
    """Fill every size (or take ``databases`` as filled), then load them in turn, ``rounds`` times.

    The loads of the sizes alternate, each round starting one size later, so that a machine whose
    speed drifts (a shared, virtual one) slows each size alike; each size reports its median round.
    """
    about = machine(server)
    about["postgresql"].update(anyio.run(_settings, server))
    about["load_average_at_start"] = os.getloadavg()
    filled: list[Filled] = []
    try:
        if databases:
            filled = sorted((anyio.run(_adopt, url) for url in databases), key=lambda f: f.size)
        else:
            for size in sizes:
                filled.append(fill_size(server, size, ids, failures))
        loads: list[list[dict[str, Any]]] = [[] for _ in filled]
        for round_ in range(rounds):
            for i in [(round_ + k) % len(filled) for k in range(len(filled))]:
                _say(f"round {round_ + 1} of {rounds}: loading size {filled[i].size:,}")
                loads[i].append(anyio.run(measure_load, filled[i].url, filled[i].name, runs, failures))
                _say(f"  {loads[i][-1]['runs_per_s']:.0f} runs/s, p99 {loads[i][-1]['p99_ms']} ms")
        measured = []
        for database, its_loads in zip(filled, loads, strict=True):
            _say(f"size {database.size:,}: auditing")
            measured.append(
                {
                    "size": database.size,
                    "database": redact(database.url) if keep or not database.owned else None,
                    "fill": database.fill,
                    "load": _median_load(its_loads),
                    "rounds": [
                        {key: load[key] for key in ("runs_per_s", "p50_ms", "p99_ms", "ok")} for load in its_loads
                    ],
                    "audit": time_audit(database.url),
                }
            )
    finally:
        for database in filled:
            if database.owned and not keep:
                anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    return {
        "server": redact(server),
        "machine": about,
        "runs": runs,
        "rounds": rounds,
        "failures": dict(zip(("qc", "delivery", "invalid"), failures, strict=True)),
        "sizes": measured,
        "ratios": ratios(measured) if len(measured) > 1 else {},
        "targets": TARGETS,
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value is not None and base else None


def ratios(sizes: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each size's throughput and p99 against the smallest size's (size 0 when given)."""
    base = sizes[0]["load"]
    return {
        str(s["size"]): {
            "throughput": _ratio(s["load"]["runs_per_s"], base["runs_per_s"]),
            "p99": _ratio(s["load"]["p99_ms"], base["p99_ms"]),
        }
        for s in sizes[1:]
    }


async def _settings(server: str) -> dict[str, str]:
    rows = await _admin(
        server, f"SELECT name, current_setting(name) AS setting FROM pg_settings WHERE name IN {_SETTINGS!r}"
    )
    return {row["name"]: row["setting"] for row in rows}


def _cell(value: float | None, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def render(report: dict[str, Any]) -> str:
    sizes = report["sizes"]
    kinds = sorted({s["fill"]["ids"] for s in sizes})
    settings = report["machine"]["postgresql"]
    busy = report["machine"]["load_average_at_start"][0]
    lines = [
        f"{report['runs']:,} runs per load, 1 daemon, {sum(report['failures'].values()):.0%} failing; "
        f"run ids {'/'.join(kinds)}; shared_buffers {settings['shared_buffers']}, "
        f"max_wal_size {settings['max_wal_size']}, autovacuum {settings['autovacuum']}"
        + (f"; load average {busy:.1f} at start: the machine was not quiet" if busy >= 0.5 else ""),
        f"{'size':>10} {'fill s':>7} {'db size':>9} {'runs/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'PG ms/run':>9} {'daemon ms/run':>13} {'audit s':>7}",
    ]
    for s in sizes:
        load, cpu = s["load"], s["load"]["cpu_ms_per_run"]
        lines.append(
            f"{s['size']:>10,} {s['fill']['seconds']:>7.0f} {s['fill']['database_bytes'] / 2**20:>5,.0f} MiB "
            f"{load['runs_per_s']:>7.0f} {_cell(load['p50_ms'], '.0f'):>7} {_cell(load['p99_ms'], '.0f'):>7} "
            f"{_cell(cpu['postgresql'], '.2f'):>9} {_cell(cpu['daemon'], '.2f'):>13} {s['audit']['seconds']:>7.1f}"
            + ("" if load["ok"] else "  loadtest NOT ok")
            + ("" if s["audit"]["clean"] else "  audit NOT clean")
        )
    lines.append(f"{'size':>10} {'PG ms/run, this db':>18} {'WAL KiB/run':>11} {'FPI/run':>7} {'checkpoints':>11}")
    for s in sizes:
        load = s["load"]
        lines.append(
            f"{s['size']:>10,} {_cell(load['cpu_ms_per_run']['postgresql_this_database'], '.2f'):>18} "
            f"{load['wal_per_run']['kib']:>11.1f} {load['wal_per_run']['full_page_images']:>7.1f} "
            f"{load['checkpoints']:>11}"
        )
    for s in sizes:
        each = ", ".join(f"{r['runs_per_s']:.0f}" for r in s["rounds"])
        lines.append(f"size {s['size']:,}: runs/s of each round {each}; the median round above")
    base = sizes[0]["size"] if sizes else 0
    for size, ratio in report["ratios"].items():
        lines.append(
            f"size {int(size):,} / size {base:,}: throughput {_cell(ratio['throughput'], '.2f')} "
            f"(target >= {TARGETS['throughput']}), p99 {_cell(ratio['p99'], '.2f')} (target <= {TARGETS['p99']})"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",")]
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError("sizes are numbers of runs, 0 or more")
    return sizes


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return int(text)


def _urls(text: str) -> list[str]:
    urls = [part.strip() for part in text.split(",") if part.strip()]
    if not urls or not all(url.startswith("postgresql") for url in urls):
        raise argparse.ArgumentTypeError("database URLs (postgresql://...), comma-separated, as --keep printed them")
    return urls


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="A server to create the databases on (any database of it).")
    parser.add_argument("--sizes", type=_sizes, default=[0, 1_000_000, 5_000_000], help="Finished runs to prefill.")
    parser.add_argument("--runs", type=int, default=20_000, help="Runs of each load.")
    parser.add_argument("--fail-qc", type=float, default=FAILURES[0])
    parser.add_argument("--fail-delivery", type=float, default=FAILURES[1])
    parser.add_argument("--invalid", type=float, default=FAILURES[2])
    parser.add_argument("--ids", choices=ID_KINDS, help="Run ids of the fill (default: what `sagad submit` makes).")
    parser.add_argument("--rounds", type=_positive, default=3, help="Loads of each size, taken in turn.")
    parser.add_argument("--keep", action="store_true", help="Keep the filled databases (and print their URLs).")
    parser.add_argument(
        "--databases", type=_urls, default=[], help="Measure these kept databases (comma-separated) instead of filling."
    )
    parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
    args = parser.parse_args(argv)
    failures = (args.fail_qc, args.fail_delivery, args.invalid)
    server = args.database_url or default_server_url()
    report = measure_all(
        server, args.sizes, args.runs, args.ids, failures, keep=args.keep, rounds=args.rounds, databases=args.databases
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    if args.keep:
        _say("kept: " + ", ".join(str(s["database"]) for s in report["sizes"]))


if __name__ == "__main__":
    main()
