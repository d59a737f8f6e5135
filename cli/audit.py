"""``sagad audit``: the invariants checked, over the whole database or a recent window, with a progress bar."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sagad.cli.common import DatabaseUrl, fail, migrated_database, run_async
from sagad.store.audit import Progress as Checks
from sagad.store.audit import audit_database

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(option: str, value: str) -> float:
    """Seconds in ``value`` (90s, 30m, 2h, 1d; a bare number is seconds), or a message naming the option."""
    found = _DURATION.fullmatch(value.strip())
    seconds = float(found[1]) * _UNITS[found[2] or "s"] if found else math.nan
    if not 0 < seconds <= 3650 * 86_400:
        fail(f"{option} must be a duration like 90s, 30m, 2h or 1d (up to ten years), got {value!r}")
    return seconds


@contextmanager
def audit_progress(*, enabled: bool) -> Iterator[Checks | None]:
    """A progress bar on standard error while the checks run (when it is a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("auditing", total=None)

        def advance(check: str, done: int, total: int) -> None:
            bar.update(task, description=check[:60], completed=done, total=total)

        yield advance


def audit_command(
    grace_seconds: Annotated[
        float,
        typer.Option(
            envvar="SAGAD_AUDIT_GRACE_SECONDS", min=0, max=31_536_000, help="How long past its lease a run may be."
        ),
    ] = 0.0,
    since: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_AUDIT_SINCE",
            help="Check only the runs submitted in this last while (e.g. 90s, 30m, 2h, 1d): a cost bounded by "
            "the window, not by history. Default: the whole database.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="SAGAD_AUDIT_JSON", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Check the invariants: exit 0 when clean, 1 with a report otherwise."""
    since_seconds = None if since is None else parse_duration("--since", since)

    async def main() -> int:
        async with migrated_database(database_url, max_size=2) as db:
            with audit_progress(enabled=not as_json) as progress:
                report = await audit_database(
                    db, grace_seconds=grace_seconds, since_seconds=since_seconds, progress=progress
                )
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            print(report.render())
        return 0 if report.clean else 1

    run_async(main)
