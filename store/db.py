"""The connection pool, and the one place where driver errors become sagad's errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from sagad.errors import ConfigError, DatabaseError, PermanentDatabaseError, SchemaNotReady, TransientDatabaseError

# SQLSTATE classes worth a retry: connection exceptions, transaction rollbacks (serialization
# failure, deadlock), insufficient resources, and the server shutting down or starting up.
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")


def redact(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        parsed = make_url(url)
    except Exception:
        return "<unparsable database URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def asyncpg_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs too: ``postgresql+asyncpg://`` becomes ``postgresql://``."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"database URL {redact(url)!r} is not a URL: {exc}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL {redact(url)!r} is not a postgresql:// URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def translate(exc: BaseException) -> DatabaseError | None:
    """The sagad error for a driver error, or None when ``exc`` did not come from the database."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state.startswith(_TRANSIENT_SQLSTATES):
            return TransientDatabaseError(f"{type(exc).__name__}: {exc}")
        if state == "42P01":  # undefined table
            return SchemaNotReady(f"the database is not migrated ({exc}); run `sagad migrate`")
        return PermanentDatabaseError(f"{type(exc).__name__} [{state}]: {exc}")
    # InternalClientError: the driver found a connection in a state it cannot use; a fresh one can.
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError, TimeoutError)):
        return TransientDatabaseError(f"{type(exc).__name__}: {exc}")
    return None


# The array types sagad binds. The driver looks a type up in the catalog the first time a
# connection meets it, ~10 ms each time; meeting them all at connect keeps that out of runs.
_BOUND_TYPES = "SELECT $1::uuid[], $2::bigint[], $3::int[], $4::smallint[], $5::float8[], $6::bool[], $7::text[]"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.prepare(_BOUND_TYPES)


async def _skip_session_reset(conn: asyncpg.Connection) -> None:
    """Nothing to reset: sagad never changes session state.

    No settings, advisory locks or cursors, and the submission listener unlistens itself; the
    driver's default reset would add a round trip to every statement. The pool still rolls back
    an unfinished transaction, and ``_acquired`` never returns a connection that saw an error.
    """


def _is_closed(conn: asyncpg.Connection) -> bool:
    """Closed, or already detached from its pool by the driver after the connection died."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


@asynccontextmanager
async def _acquired(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        try:
            yield conn
        except BaseException as exc:
            # A server error leaves the protocol ready for the next statement; anything else
            # (connection lost, cancelled mid-statement) may not, so the connection goes.
            if not isinstance(exc, asyncpg.PostgresError) and not _is_closed(conn):
                conn.terminate()
            raise


class Database:
    """A pool of connections to one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url
        # Bumped by refresh_plans(); each server process (one per connection) is at the generation it
        # last planned in, or at the one current when first used (it had planned nothing before).
        self._plans_generation = 0
        self._planned_in: dict[int, int] = {}

    @classmethod
    async def connect(cls, url: str, *, max_size: int = 10, min_size: int = 1) -> Database:
        """A pool of up to ``max_size`` connections, ``min_size`` of them opened at once."""
        dsn = asyncpg_dsn(url)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_skip_session_reset,
                command_timeout=60,
            )
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None and not isinstance(exc, (ValueError, OverflowError, asyncpg.PostgresError)):
                raise
            raise ConfigError(f"cannot connect to {redact(url)}: {type(exc).__name__}: {exc}") from None
        return cls(pool, url)

    def refresh_plans(self) -> None:
        """Have every connection re-plan its prepared statements before it next runs one.

        PostgreSQL keeps a prepared statement's generic plan until the table's statistics change.
        Plans made while the tables were nearly empty (a fresh database) scan whole tables, and
        grow slower with them until autovacuum analyzes; call this when the tables have grown.
        """
        self._plans_generation += 1

    async def _replan_if_stale(self, conn: asyncpg.Connection) -> None:
        pid = conn.get_server_pid()
        if self._planned_in.setdefault(pid, self._plans_generation) < self._plans_generation:
            await conn.execute("DISCARD PLANS")
            self._planned_in[pid] = self._plans_generation

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction; driver errors leave it as sagad's DatabaseErrors."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection outside any transaction (single statements, LISTEN)."""
        try:
            async with _acquired(self._pool) as conn:
                await self._replan_if_stale(conn)
                yield conn
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
