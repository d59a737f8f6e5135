"""Side by side on one PostgreSQL server: (a) sagad end to end, (b) its SQL replayed raw, (c) DBOS.

``python -m bench.run [--runs N] [--dbos-runs M] [--database-url URL] [--json]`` creates three fresh
databases on the server, migrates them, measures each, prints the figures and the ratios a/b and
a/c, and drops the databases again.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from sqlalchemy.engine import make_url

from bench.ceiling import measure_ceiling
from sagad.cli.load import Mix
from sagad.store.db import asyncpg_dsn, redact
from sagad.store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
SOCKET_DIR = Path("/var/run/postgresql")
FAIL_QC, FAIL_DELIVERY, INVALID = 0.04, 0.03, 0.03
TARGETS = {"a/b": 0.7, "a/c": 50.0}


def default_server_url() -> str:
    if (SOCKET_DIR / ".s.PGSQL.5432").exists():
        return f"postgresql://postgres@/postgres?host={SOCKET_DIR}"
    from sagad.store.embedded import embedded_url  # noqa: PLC0415  (starts a server: only when needed)

    return embedded_url()


def database_url(server: str, name: str) -> str:
    return make_url(asyncpg_dsn(server)).set(database=name).render_as_string(hide_password=False)


async def _admin(server: str, *statements: str) -> list[asyncpg.Record]:
    """Run statements outside a transaction (CREATE/DROP DATABASE); returns the last one's rows."""
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await conn.fetch(statement)
        return rows
    finally:
        await conn.close()


async def _checkpoint(server: str) -> None:
    """Start each measurement with no dirty pages left over from the previous one (superuser only)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await _admin(server, "CHECKPOINT")


async def _server_settings(server: str) -> dict[str, str]:
    names = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections")
    rows = await _admin(
        server, f"SELECT name, current_setting(name) AS setting FROM pg_settings WHERE name IN {names!r}"
    )
    return {row["name"]: row["setting"] for row in rows}


def machine(server: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": sys.version.split()[0],
        "postgresql": anyio.run(_server_settings, server),
    }


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def measure_sagad(url: str, runs: int, rate: float = 0) -> dict[str, Any]:
    """``sagad loadtest`` with one daemon, as a user would run it; its JSON report, trimmed.

    ``rate`` runs are submitted per second (open loop); 0 submits them as fast as possible.
    """
    options = ["--runs", str(runs), *(["--rate", f"{rate:g}"] if rate else [])]
    options += ["--fail-qc", str(FAIL_QC), "--fail-delivery", str(FAIL_DELIVERY)]
    options += ["--invalid", str(INVALID), "--daemons", "1", "--json", "--database-url", url]
    # A folder of its own, so the daemon's log does not mix with another loadtest's in ./.sagad/.
    with tempfile.TemporaryDirectory(prefix="sagad-bench-") as folder:
        done = subprocess.run(
            [sys.executable, "-m", "sagad", "loadtest", *options],
            check=False,
            cwd=folder,
            capture_output=True,
            text=True,
        )
        if "{" not in done.stdout:
            logs = "".join(p.read_text() for p in Path(folder, ".sagad").glob("*.log"))
            raise SystemExit(f"sagad loadtest failed ({done.returncode}):\n{_tail(done.stderr)}\n{_tail(logs)}")
    report: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    return {
        "runs": report["runs"],
        "seconds": report["seconds"],
        "runs_per_s": report["throughput_runs_per_s"],
        "ok": report["ok"],
        "outcomes": report["outcomes"],
        "latency_ms": report["latency_ms"],
        "compensation_latency_ms": report["compensation_latency_ms"],
        "command": "sagad loadtest " + " ".join([*options[:-1], "<db_a>"]),
    }


def measure_dbos(url: str, runs: int) -> dict[str, Any]:
    """``bench.dbos_pipeline`` in a process of its own; ``{"unavailable": reason}`` when it cannot run."""
    if importlib.util.find_spec("dbos") is None:
        return {"unavailable": "the dbos package is not installed (pip install dbos)"}
    options = ["--runs", str(runs), "--fail-qc", str(FAIL_QC), "--fail-delivery", str(FAIL_DELIVERY)]
    options += ["--invalid", str(INVALID), "--database-url", url]
    done = subprocess.run(
        [sys.executable, "-m", "bench.dbos_pipeline", *options], check=False, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0 or not done.stdout.strip():
        last = _tail(done.stderr, 1) or f"exit status {done.returncode}"
        return {"unavailable": last}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ratio(a: dict[str, Any], other: dict[str, Any]) -> float | None:
    rate = other.get("runs_per_s")
    return round(a["runs_per_s"] / rate, 2) if rate else None


def measure_all(
    server: str, runs: int, dbos_runs: int, *, sagad_route: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """Databases created on ``server``; ``sagad_route`` turns (a)'s URL into the one sagad gets (a pooler's)."""
    names = {label: f"sagad_bench_{os.getpid()}_{label}" for label in "abc"}
    urls = {label: database_url(server, name) for label, name in names.items()}
    anyio.run(_admin, server, *(f'CREATE DATABASE "{name}"' for name in names.values()))
    try:
        for url in urls.values():
            upgrade(url)
        anyio.run(_checkpoint, server)
        sagad = measure_sagad(sagad_route(urls["a"]) if sagad_route else urls["a"], runs)
        anyio.run(_checkpoint, server)
        outcomes = Mix.of(runs, FAIL_QC, FAIL_DELIVERY, INVALID).shuffled()
        ceiling = anyio.run(measure_ceiling, urls["b"], outcomes)
        anyio.run(_checkpoint, server)
        dbos = measure_dbos(urls["c"], dbos_runs)
    finally:
        anyio.run(_admin, server, *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names.values()))
    return {
        "server": redact(server),
        "machine": machine(server),
        "sagad": sagad,
        "ceiling": {
            "runs": ceiling.runs,
            "seconds": round(ceiling.seconds, 3),
            "runs_per_s": round(ceiling.runs_per_s, 1),
            "connections": ceiling.connections,
            "transactions": ceiling.transactions,
            "outcomes": ceiling.outcomes,
            "audit_clean": ceiling.audit_clean,
        },
        "dbos": dbos,
        "ratios": {"a/b": _ratio(sagad, {"runs_per_s": ceiling.runs_per_s}), "a/c": _ratio(sagad, dbos)},
        "targets": TARGETS,
    }


def _row(name: str, figures: dict[str, Any], note: str) -> str:
    return f"{name:36} {figures['runs']:>7} {figures['seconds']:>9.2f} {figures['runs_per_s']:>9.1f}  {note}"


def render(report: dict[str, Any]) -> str:
    sagad, ceiling, dbos = report["sagad"], report["ceiling"], report["dbos"]
    latency = sagad["latency_ms"].get("completed", {})
    sagad_note = f"completed runs: p50 {latency.get('p50', 0):.0f} ms, p99 {latency.get('p99', 0):.0f} ms"
    lines = [
        f"{'benchmark':36} {'runs':>7} {'seconds':>9} {'runs/s':>9}  notes",
        _row("(a) sagad loadtest, 1 daemon", sagad, sagad_note + ("" if sagad["ok"] else "; loadtest NOT ok")),
        _row(
            f"(b) ceiling: raw asyncpg, {ceiling['connections']} conns",
            ceiling,
            f"{ceiling['transactions']} transactions; submit and content untimed"
            + ("" if ceiling["audit_clean"] else "; audit NOT clean"),
        ),
    ]
    if "unavailable" in dbos:
        lines.append(f"{'(c) DBOS Transact':36} unavailable: {dbos['unavailable']}")
    else:
        lines.append(_row(f"(c) DBOS Transact {dbos['dbos_version']}", dbos, "a workflow per run, a tx per step"))
    for key, value in report["ratios"].items():
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"{key} = {shown}   (target >= {report['targets'][key]:g})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--runs", type=int, default=10_000, help="Runs for (a) sagad and (b) the ceiling.")
    parser.add_argument("--dbos-runs", type=int, default=300, help="Workflows for (c) DBOS Transact.")
    parser.add_argument("--database-url", help="A server to create the three databases on (any database of it).")
    parser.add_argument("--json", action="store_true", help="Print a machine-readable report.")
    args = parser.parse_args(argv)
    report = measure_all(args.database_url or default_server_url(), args.runs, args.dbos_runs)
    print(json.dumps(report, indent=2) if args.json else render(report))


if __name__ == "__main__":
    main()
