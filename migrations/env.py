"""Alembic environment: runs migrations over an async engine (asyncpg)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sagad.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    """The URL ``sagad migrate`` passes, or SAGAD_DATABASE_URL for alembic's own command line."""
    url = config.attributes.get("url") or os.environ.get("SAGAD_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set SAGAD_DATABASE_URL")
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("sagad migrations run online only: `sagad migrate`")
asyncio.run(_run_async())
