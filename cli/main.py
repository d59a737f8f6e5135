"""The ``sagad`` command line."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from sagad.cli.audit import audit_command
from sagad.cli.common import DatabaseUrl, apply_migrations, fail, migrated_database, run_async
from sagad.cli.daemon import daemon_command
from sagad.cli.demo import demo_command
from sagad.cli.loadtest import loadtest_command
from sagad.content.brief import MAX_BRIEF_BYTES, parse_brief
from sagad.domain.runs import RunId
from sagad.errors import InvalidBrief
from sagad.store import migrate as migrations
from sagad.store.runs import RunStore

app = typer.Typer(
    help="sagad: a saga pipeline daemon on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run", help="Run the daemon in the foreground until SIGTERM or SIGINT.")(daemon_command)
app.command("demo", help="Push the example briefs through a daemon and print each outcome.")(demo_command)
app.command("audit", help="Check the invariants: exit 0 when clean, 1 with a report otherwise.")(audit_command)
app.command("loadtest", help="Drive daemons with a known mix of briefs; report throughput, latency, audit.")(
    loadtest_command
)


@app.command("migrate")
def migrate_command(database_url: DatabaseUrl = None) -> None:
    """Apply the database migrations (safe to run again)."""
    apply_migrations(database_url)
    print(f"database migrated to {migrations.head_revision()}")


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
    try:
        # Never more than one byte past the limit: /dev/zero must not fill the memory.
        if file == "-":
            data = sys.stdin.buffer.read(MAX_BRIEF_BYTES + 1)
        else:
            with Path(file).open("rb") as brief_file:
                data = brief_file.read(MAX_BRIEF_BYTES + 1)
    except OSError as error:
        fail(f"cannot read the brief: {error.strerror}: {file}")
    if len(data) > MAX_BRIEF_BYTES:
        fail(f"invalid brief: brief is over the {MAX_BRIEF_BYTES}-byte limit")
    try:
        _, raw = parse_brief(data)
    except InvalidBrief as error:
        fail(f"invalid brief: {error}")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200 and idempotency_key.isprintable()):
        fail("--idempotency-key must be 1 to 200 printable characters")

    async def main() -> None:
        async with migrated_database(database_url, max_size=1) as db:
            run_id, _ = await RunStore(db).submit(raw, idempotency_key)
        print(run_id)

    run_async(main)


@app.command("status")
def status_command(
    run_id: Annotated[str, typer.Argument(help="The run id that `sagad submit` printed.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Print a run as JSON: status, current step, attempts, last error, timings."""
    try:
        parsed = RunId(uuid.UUID(run_id))
    except ValueError:
        fail(f"not a run id (a UUID): {run_id!r}")

    async def main() -> int:
        async with migrated_database(database_url, max_size=1) as db:
            status = await RunStore(db).status(parsed)
        if status is None:
            print(f"sagad: no run {parsed}", file=sys.stderr)
            return 1
        print(json.dumps(status.as_dict(), indent=2))
        return 0

    run_async(main)


if __name__ == "__main__":
    app()
