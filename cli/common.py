"""What every command shares: the database option, and turning errors into one clear line."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn

import anyio
import typer

from sagad.errors import SagadError
from sagad.store.budget import ConnectionBudget
from sagad.store.db import Database, redact
from sagad.store.embedded import embedded_url
from sagad.store.limits import SessionLimits
from sagad.store.pooler import Pooler
from sagad.store.version import ensure_migrated

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
    """The URL given, else the embedded server's (started if need be); a failure ends the command with one line."""
    if url:
        return url
    try:
        return embedded_url()
    except SagadError as error:
        fail(str(error))


def apply_migrations(url: str | None) -> str:
    """Migrate the configured database; any failure ends the command with one line. Returns the URL."""
    # Alembic and SQLAlchemy's ORM machinery load only for the commands that migrate.
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from sagad.store import migrate  # noqa: PLC0415

    resolved = resolve_url(url)
    try:
        migrate.upgrade(resolved)
    except SagadError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot connect to {redact(resolved)}: {type(error).__name__}: {error}")
    except DBAPIError as error:
        fail(f"migration failed: {type(error.orig).__name__}: {error.orig}")
    except Exception as error:  # alembic and the driver raise many kinds; the user needs one line
        fail(f"migration failed: {type(error).__name__}: {error}")
    return resolved


def fail(message: str, code: int = 1) -> NoReturn:
    print("sagad: " + " ".join(message.split()), file=sys.stderr)
    raise typer.Exit(code)


def run_async(main: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run ``main`` on the event loop; a SagadError ends the command with its message, not a traceback.

    Also when it comes out of a task group, wrapped in an exception group with nothing else (or with the
    exit of a message already printed).
    """
    try:
        code = anyio.run(main)
    except SagadError as error:
        fail(str(error))
    except BaseExceptionGroup as group:
        # A SagadError, or the exit of a ``fail`` already reported, raised inside a task group.
        ends, others = group.split((SagadError, typer.Exit))
        if ends is None or others is not None:
            raise
        end = _first_leaf(ends)
        if isinstance(end, SagadError):
            fail(str(end))
        raise end from None
    if code:
        raise typer.Exit(code)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


@asynccontextmanager
async def migrated_database(
    url: str | None,
    *,
    max_size: int = 10,
    min_size: int = 1,
    limits: SessionLimits | None = None,
    budget: ConnectionBudget | None = None,
    pooler: Pooler = Pooler.AUTO,
    direct_url: str | None = None,
) -> AsyncIterator[Database]:
    """A pool on the configured database, which must be migrated to this sagad's schema."""
    db = await Database.connect(
        resolve_url(url),
        max_size=max_size,
        min_size=min_size,
        limits=limits,
        budget=budget,
        pooler=pooler,
        direct_url=direct_url,
    )
    try:
        await ensure_migrated(db)
        yield db
    finally:
        with anyio.move_on_after(5, shield=True):
            await db.close()
