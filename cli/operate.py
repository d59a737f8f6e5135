"""What the operator commands share: a client on the configured database, filters from options, output."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from sagad.cli.common import fail, resolve_url

if TYPE_CHECKING:
    from sagad.client import Client
    from sagad.domain.operations import HistoryEvent, Run, RunFilter

Statuses = Annotated[
    list[str] | None,
    typer.Option(
        "--status", envvar="SAGAD_RUNS_STATUS", help="Only runs in this status (repeatable).", show_default=False
    ),
]
AtStep = Annotated[
    str | None,
    typer.Option(
        "--step", envvar="SAGAD_RUNS_STEP", help="Only runs at this step, or that failed there.", show_default=False
    ),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        envvar="SAGAD_RUNS_SINCE",
        help="Only runs submitted since: an age (90s, 15m, 2h, 7d) or an ISO 8601 time with its zone.",
        show_default=False,
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until", envvar="SAGAD_RUNS_UNTIL", help="Only runs submitted before (as --since).", show_default=False
    ),
]
ErrorText = Annotated[
    str | None,
    typer.Option(
        "--error", envvar="SAGAD_RUNS_ERROR", help="Only runs whose last error contains this text.", show_default=False
    ),
]
WaitingOnUndo = Annotated[
    bool,
    typer.Option("--waiting-on-undo", envvar="SAGAD_RUNS_WAITING_ON_UNDO", help="Only runs held up by a failing undo."),
]
Cancelled = Annotated[
    bool, typer.Option("--cancelled", envvar="SAGAD_RUNS_CANCELLED", help="Only runs whose cancel was asked for.")
]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(option: str, value: str | None) -> datetime | None:
    """An age (``15m``) or an ISO 8601 time with its zone; one line naming the option otherwise."""
    if value is None:
        return None
    age = _AGE.match(value.strip())
    if age:
        return datetime.now(UTC) - timedelta(seconds=float(age.group(1)) * _UNIT[age.group(2)])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be an age (90s, 15m, 2h, 7d) or an ISO 8601 time, not {value[:80]!r}")
    if moment.tzinfo is None:
        fail(f"{option} must carry a time zone (e.g. 2026-12-02T10:00:00+00:00): {value[:80]!r}")
    return moment


def run_filter(
    statuses: list[str] | None,
    step: str | None,
    since: str | None,
    until: str | None,
    error: str | None,
    waiting_on_undo: bool,
    cancelled: bool,
) -> RunFilter:
    """The filter the options describe; an unknown status or step ends the command with one line."""
    from sagad.domain.operations import RunFilter  # noqa: PLC0415
    from sagad.domain.runs import RunStatus  # noqa: PLC0415
    from sagad.domain.steps import STEP_NAMES, Step  # noqa: PLC0415

    chosen = set()
    for status in statuses or ():
        try:
            chosen.add(RunStatus(status))
        except ValueError:
            fail(f"--status must be one of {', '.join(s.value for s in RunStatus)}, not {status[:80]!r}")
    if step is not None and step not in STEP_NAMES:
        fail(f"--step must be one of {', '.join(STEP_NAMES)}, not {step[:80]!r}")
    return RunFilter(
        statuses=frozenset(chosen),
        step=None if step is None else Step(step),
        since=parse_moment("--since", since),
        until=parse_moment("--until", until),
        error_contains=error,
        waiting_on_undo=waiting_on_undo,
        cancelled=cancelled,
    )


def is_everything(where: RunFilter) -> bool:
    from sagad.domain.operations import RunFilter  # noqa: PLC0415

    return where == RunFilter()


@asynccontextmanager
async def client_of(url: str | None) -> AsyncIterator[Client]:
    from sagad.client import Client  # noqa: PLC0415

    async with Client(resolve_url(url)) as client:
        yield client


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(runs: list[Run]) -> str:
    """Runs as a plain table, one line each: id, status, step, attempts, submitted, last error."""
    header = ("RUN", "STATUS", "STEP", "ATTEMPTS", "SUBMITTED (UTC)", "LAST ERROR")
    rows = [
        (
            str(run.run_id),
            run.status.value + (" (cancel asked)" if run.cancel_requested_at and not run.is_terminal else ""),
            run.current_step or run.failed_step or "-",
            str(run.attempts),
            _when(run.submitted_at),
            " ".join((run.compensation_error or run.last_error or "").split())[:80],
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in (header, *rows)
    ).rstrip()


def show(run: Run) -> str:
    """A run for a person: one field a line, the empty ones left out."""
    lines = []
    for name, value in run.as_dict().items():
        if value is not None:
            lines.append(f"{name.replace('_', ' ')}: {value}")
    return "\n".join(lines)


def confirm(count: int, verb: str, yes: bool) -> None:
    """Ask before touching ``count`` runs, unless --yes; on no terminal without --yes, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{verb} {count} runs: pass --yes to confirm (or --dry-run to list them)")
    if not typer.confirm(f"{verb} {count} runs?", default=False, err=True):
        fail("nothing done")


def confirm_all(what: str) -> None:
    """Ask before ``what``; on no terminal, refuse (the caller offers --yes)."""
    if not sys.stdin.isatty():
        fail(f"{what}: pass --yes to confirm")
    if not typer.confirm(f"{what}?", default=False, err=True):
        fail("nothing done")


def history_lines(events: list[HistoryEvent]) -> str:
    """A run's history for a person: one event a line, oldest first."""
    lines = []
    for event in events:
        parts = [_when(event.at), event.event]
        if event.step:
            parts.append(event.step)
        if event.worker:
            parts.append(f"by {event.worker}" if event.event == "cancel requested" else f"on {event.worker}")
        if event.token is not None and event.event == "claimed":
            parts.append(f"(lease {event.token}, attempt {event.attempt})")
        elif event.token is not None and event.event in ("committed", "call failed"):
            parts.append(f"(lease {event.token})")
        line = "  " + " ".join(parts)
        if event.detail:
            line += ": " + " ".join(event.detail.split())[:200]
        if event.call_ms is not None:
            attempts = "" if event.attempt is None else f", {event.attempt} attempt{'s' * (event.attempt != 1)}"
            line += f": {event.call_ms:.1f} ms{attempts}"
        if event.retry_reasons:
            line += "; retried: " + " ".join(event.retry_reasons.split())[:300]
        if event.rows is not None:
            line += ": " + (", ".join(f"{table} {n}" for table, n in sorted(event.rows.items())) or "no rows")
        lines.append(line)
    return "\n".join(lines)
