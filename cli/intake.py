"""``sagad intake``: pause and resume the fleet's claiming of new runs (state in the database)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sagad.cli.common import DatabaseUrl, run_async
from sagad.cli.operate import client_of

app = typer.Typer(
    help="Pause or resume the claiming of new runs, fleet-wide.", no_args_is_help=True, add_completion=False
)


def _say(paused: bool, by: str | None, at: object, reason: str | None) -> str:
    state = "paused" if paused else "running"
    why = f" ({reason})" if reason else ""
    return f"intake {state}{why}" + (f", since {at} by {by}" if at else "")


@app.command("pause")
def pause_command(
    reason: Annotated[str | None, typer.Option(envvar="SAGAD_INTAKE_REASON", help="Why (shown to others).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Stop every daemon claiming new runs (runs in flight finish; submissions wait)."""

    async def main() -> None:
        async with client_of(database_url) as client:
            state = await client.pause_intake(reason)
        print(_say(state.paused, state.changed_by, state.changed_at, state.reason))

    run_async(main)


@app.command("resume")
def resume_command(database_url: DatabaseUrl = None) -> None:
    """Let every daemon claim new runs again."""

    async def main() -> None:
        async with client_of(database_url) as client:
            state = await client.resume_intake()
        print(_say(state.paused, state.changed_by, state.changed_at, state.reason))

    run_async(main)


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="As JSON, for machines.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Whether the fleet claims new runs, and who changed it when."""

    async def main() -> None:
        async with client_of(database_url) as client:
            state = await client.intake()
        if as_json:
            at = None if state.changed_at is None else state.changed_at.isoformat()
            print(
                json.dumps(
                    {"paused": state.paused, "changed_at": at, "changed_by": state.changed_by, "reason": state.reason}
                )
            )
        else:
            print(_say(state.paused, state.changed_by, state.changed_at, state.reason))

    run_async(main)
