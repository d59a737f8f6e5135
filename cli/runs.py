"""``sagad runs``: list, show, cancel, retry and resume runs, one by one or by filter (over ``sagad.Client``)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sagad.cli.bulk import Outcome, act_in_pages
from sagad.cli.common import DatabaseUrl, fail, run_async
from sagad.cli.operate import (
    AtStep,
    Cancelled,
    ErrorText,
    Since,
    Statuses,
    Until,
    WaitingOnUndo,
    client_of,
    confirm_all,
    history_lines,
    is_everything,
    parse_moment,
    run_filter,
    show,
    table,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sagad.client import Client
    from sagad.domain.operations import CancelResult, RunFilter
    from sagad.domain.runs import RunId

app = typer.Typer(help="List, show, cancel, retry and resume runs.", no_args_is_help=True, add_completion=False)

RunIds = Annotated[list[str] | None, typer.Argument(help="Run ids; or none, and a filter.", show_default=False)]
Yes = Annotated[bool, typer.Option("--yes", envvar="SAGAD_YES", help="Do it without asking.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count (and list) the runs it would touch; change nothing.")]
Page = Annotated[
    int, typer.Option("--page-size", envvar="SAGAD_PAGE_SIZE", min=1, max=1000, help="Runs per transaction.")
]


def _ids(run_ids: list[str] | None) -> list[RunId]:
    from sagad.client import run_id_of  # noqa: PLC0415
    from sagad.errors import InvalidRequest  # noqa: PLC0415

    try:
        return [run_id_of(run_id) for run_id in run_ids or ()]
    except InvalidRequest as error:
        fail(str(error))


@app.command("list")
def list_command(
    status: Statuses = None,
    step: AtStep = None,
    since: Since = None,
    until: Until = None,
    error: ErrorText = None,
    waiting_on_undo: WaitingOnUndo = False,
    cancelled: Cancelled = False,
    limit: Annotated[int, typer.Option(envvar="SAGAD_RUNS_LIMIT", min=1, max=1000, help="Runs per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(envvar="SAGAD_RUNS_CURSOR", help="The next page: the cursor a page printed.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: runs and next_cursor.")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON object a run; the cursor on stderr.")] = False,
    count: Annotated[bool, typer.Option("--count", help="Print how many runs match, nothing else.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List runs, newest first, with filters and a cursor for the next page."""
    where = run_filter(status, step, since, until, error, waiting_on_undo, cancelled)

    async def main() -> None:
        async with client_of(database_url) as client:
            if count:
                print(await client.count(where))
                return
            page = await client.list(where, limit=limit, cursor=cursor)
        if as_json:
            print(json.dumps({"runs": [r.as_dict() for r in page.runs], "next_cursor": page.next_cursor}, indent=2))
        elif jsonl:
            for run in page.runs:
                print(json.dumps(run.as_dict()))
        else:
            print(table(list(page.runs)) if page.runs else "no runs match")
        if page.next_cursor and not as_json:
            print(f"next page: --cursor {page.next_cursor}", file=sys.stderr)

    run_async(main)


def show_run(run_id: str, as_json: bool, database_url: str | None, *, with_history: bool = True) -> None:
    [parsed] = _ids([run_id])

    async def main() -> None:
        async with client_of(database_url) as client:
            run = await client.get(parsed)
            events = await client.history(parsed) if with_history else []
        if as_json:
            shown = run.as_dict()
            if with_history:
                shown["history"] = [event.as_dict() for event in events]
            print(json.dumps(shown, indent=2))
        else:
            print(show(run))
            if events:
                print("history:")
                print(history_lines(events))

    run_async(main)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="The run id that `sagad submit` printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="The run as JSON, for machines.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one run: status, step, attempts, errors, lease, cancel, retry links, timings."""
    show_run(run_id, as_json, database_url)


def _need_target(ids: list[RunId], where: RunFilter, what: str) -> None:
    if ids and not is_everything(where):
        fail(f"{what}: give run ids or a filter, not both")
    if not ids and is_everything(where):
        fail(f"{what}: give run ids, or a filter (--status, --step, --since, ...); every run is never implied")


@app.command("cancel")
def cancel_command(
    run_ids: RunIds = None,
    reason: Annotated[str, typer.Option(envvar="SAGAD_CANCEL_REASON", help="Why (kept on the run).")] = "",
    status: Statuses = None,
    step: AtStep = None,
    since: Since = None,
    until: Until = None,
    error: ErrorText = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    page_size: Page = 1000,
    wait: Annotated[
        float, typer.Option(envvar="SAGAD_CANCEL_WAIT", min=0, help="Seconds to wait for runs in flight to end.")
    ] = 0.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Cancel runs: each is compensated (its undos, then the one DELETE); a completed run is refused."""
    if not reason:
        fail("--reason is required: say why the runs are cancelled")
    ids = _ids(run_ids)
    where = run_filter(status, step, since, until, error, False, False)
    _need_target(ids, where, "cancel")

    async def described(client: Client, results: list[CancelResult]) -> list[Outcome]:
        from sagad.domain.operations import CancelOutcome  # noqa: PLC0415
        from sagad.errors import WaitTimedOut  # noqa: PLC0415

        outcomes = []
        for result in results:
            outcome = result.outcome.value
            if result.outcome is CancelOutcome.REQUESTED and wait > 0:
                try:
                    ended = await client.wait(result.run_id, wait)
                    outcome = "compensated" if ended.status.value == "compensated" else "completed first: not cancelled"
                except WaitTimedOut:
                    outcome = "requested (still in flight)"
            refused = result.outcome is CancelOutcome.REFUSED_COMPLETED or outcome.startswith("completed")
            outcomes.append(Outcome(f"{result.run_id} {outcome}", refused))
        return outcomes

    async def cancel(client: Client, chunk: list[RunId]) -> list[Outcome]:
        return await described(client, await client.cancel(chunk, reason))

    async def cancel_where(client: Client, where: RunFilter, page_size: int) -> AsyncIterator[list[Outcome]]:
        async for results in client.cancel_where(where, reason, page=page_size):
            yield await described(client, results)

    act_in_pages(
        "cancel",
        ids,
        where,
        yes=yes,
        dry_run=dry_run,
        page_size=page_size,
        database_url=database_url,
        act=cancel,
        act_where=cancel_where,
    )


@app.command("retry")
def retry_command(
    run_ids: RunIds = None,
    status: Statuses = None,
    step: AtStep = None,
    since: Since = None,
    until: Until = None,
    error: ErrorText = None,
    cancelled: Cancelled = False,
    yes: Yes = False,
    dry_run: DryRun = False,
    page_size: Page = 1000,
    database_url: DatabaseUrl = None,
) -> None:
    """Submit compensated runs again as new runs with the same brief, linked both ways (once per run)."""
    from sagad.domain.runs import RunStatus  # noqa: PLC0415

    ids = _ids(run_ids)
    where = run_filter(status, step, since, until, error, False, cancelled)
    _need_target(ids, where, "retry")
    if not ids:
        # Only compensated runs can be retried: a filter never means more.
        if where.statuses and where.statuses != {RunStatus.COMPENSATED}:
            fail("retry: only compensated runs can be retried (--status compensated)")
        where = type(where)(**{**_fields(where), "statuses": frozenset({RunStatus.COMPENSATED})})

    async def retry(client: Client, chunk: list[RunId]) -> list[Outcome]:
        outcomes = []
        for result in await client.retry(chunk):
            new = f" -> {result.new_run}" if result.new_run else ""
            outcomes.append(Outcome(f"{result.run_id} {result.outcome.value}{new}", result.new_run is None))
        return outcomes

    act_in_pages(
        "retry", ids, where, yes=yes, dry_run=dry_run, page_size=page_size, database_url=database_url, act=retry
    )


@app.command("resume")
def resume_command(
    run_ids: RunIds = None,
    since: Since = None,
    error: ErrorText = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    page_size: Page = 1000,
    database_url: DatabaseUrl = None,
) -> None:
    """Try now the runs waiting on a failed undo, instead of after --undo-retry-seconds."""
    ids = _ids(run_ids)
    where = run_filter(None, None, since, None, error, True, False)

    async def resume(client: Client, chunk: list[RunId]) -> list[Outcome]:
        resumed = await client.resume(chunk)
        # Not a refusal: a run that is no longer waiting needs nothing more (the command exits 0).
        return [Outcome(f"{run_id} {'resumed' if run_id in resumed else 'not waiting on an undo'}") for run_id in chunk]

    act_in_pages(
        "resume", ids, where, yes=yes, dry_run=dry_run, page_size=page_size, database_url=database_url, act=resume
    )


def _fields(where: RunFilter) -> dict[str, Any]:
    return {name: getattr(where, name) for name in where.__slots__}


@app.command("prune-history")
def prune_history_command(
    older_than: Annotated[
        str,
        typer.Option(
            envvar="SAGAD_HISTORY_OLDER_THAN", help="Delete the history of runs submitted longer ago (e.g. 30d)."
        ),
    ],
    yes: Yes = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete old runs' history (run it daily, e.g. from cron): it is what bounds the history table."""
    from datetime import UTC, datetime  # noqa: PLC0415

    cut = parse_moment("--older-than", older_than)
    if cut is None or not cut < datetime.now(UTC):
        fail("--older-than must be an age (e.g. 30d) or a time in the past")
    if not yes:
        confirm_all(f"delete the history of every run submitted before {cut.isoformat()}")

    async def main() -> None:
        async with client_of(database_url) as client:
            deleted = await client.prune_history(datetime.now(UTC) - cut)
        print(f"{deleted} history events deleted")

    run_async(main)
