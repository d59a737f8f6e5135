"""What every command shares: the database option, and turning errors into one clear line."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn

import anyio
import typer

from errors import SagadError
from store.db import Database
from store.embedded import embedded_url
from store.migrate import ensure_migrated

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SAGAD_DATABASE_URL",
        help="PostgreSQL URL (postgresql://user:pass@host:port/db). Default: an embedded server kept under ./.sagad/.",
        show_default=False,
    ),
]


def resolve_url(url: str | None) -> str:
    return url if url else embedded_url()


def fail(message: str, code: int = 1) -> NoReturn:
    print("sagad: " + " ".join(message.split()), file=sys.stderr)
    raise typer.Exit(code)


def run_async(main: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run ``main`` on the event loop; a SagadError ends the command with its message, not a traceback."""
    try:
        code = anyio.run(main)
    except SagadError as error:
        fail(str(error))
    if code:
        raise typer.Exit(code)


@asynccontextmanager
async def migrated_database(url: str | None, *, max_size: int = 10) -> AsyncIterator[Database]:
    """A pool on the configured database, which must be migrated to this sagad's schema."""
    db = await Database.connect(resolve_url(url), max_size=max_size)
    try:
        await ensure_migrated(db)
        yield db
    finally:
        with anyio.move_on_after(5, shield=True):
            await db.close()
