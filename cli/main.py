"""The ``sagad`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sagad.cli import intake, runs
from sagad.cli.common import DatabaseUrl, apply_migrations, fail, run_async
from sagad.cli.lazy import LazyGroup
from sagad.cli.operate import client_of

# Each command imports what it uses when it runs: `sagad --help`, `sagad submit` and `sagad runs list`
# load no daemon, no HTTP client, no migration machinery (tests/acceptance/test_cli_imports.py).
app = typer.Typer(
    cls=LazyGroup,
    help="sagad: a saga pipeline daemon on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(runs.app, name="runs")
app.add_typer(intake.app, name="intake")


@app.command("migrate")
def migrate_command(database_url: DatabaseUrl = None) -> None:
    """Apply the database migrations (safe to run again)."""
    from sagad.store.version import head_revision  # noqa: PLC0415

    apply_migrations(database_url)
    print(f"database migrated to {head_revision()}")


@app.command("submit")
def submit_command(
    file: Annotated[str, typer.Argument(help="The brief (JSON); - reads standard input.")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            envvar="SAGAD_IDEMPOTENCY_KEY",
            help="Submitting the same key again returns the first run instead of a new one.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Submit one brief and print its run id."""
    from sagad.client import check_idempotency_key, validated_brief  # noqa: PLC0415
    from sagad.content.brief import MAX_BRIEF_BYTES  # noqa: PLC0415
    from sagad.errors import InvalidBrief, InvalidRequest  # noqa: PLC0415

    try:
        # Never more than one byte past the limit: /dev/zero must not fill the memory.
        if file == "-":
            data = sys.stdin.buffer.read(MAX_BRIEF_BYTES + 1)
        else:
            with Path(file).open("rb") as brief_file:
                data = brief_file.read(MAX_BRIEF_BYTES + 1)
    except OSError as error:
        fail(f"cannot read the brief: {error.strerror}: {file}")
    try:
        raw = validated_brief(data)
    except InvalidBrief as error:
        fail(f"invalid brief: {error}")
    try:
        check_idempotency_key(idempotency_key)
    except InvalidRequest:
        fail("--idempotency-key must be 1 to 200 printable characters")

    async def main() -> None:
        async with client_of(database_url) as client:
            print(await client.submit(raw, idempotency_key))

    run_async(main)


@app.command("status", hidden=True)
def status_command(
    run_id: Annotated[str, typer.Argument(help="The run id that `sagad submit` printed.")],
    database_url: DatabaseUrl = None,
) -> None:
    """The run as JSON: the same as `sagad runs show RUN_ID --json` (kept for scripts)."""
    runs.show_run(run_id, True, database_url, with_history=False)


if __name__ == "__main__":
    app()
