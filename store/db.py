"""The connection pools, their time limits, and the one place where driver errors become sagad's errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import anyio
import asyncpg

from sagad.domain.db_operations import PRIORITY, Operation
from sagad.errors import (
    ConfigError,
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnreachable,
    PermanentDatabaseError,
    PoolerRefused,
    SchemaNotReady,
    TooManyClients,
    TransientDatabaseError,
)
from sagad.store.budget import ConnectionBudget
from sagad.store.limits import RENEWAL, SessionLimits, ms
from sagad.store.pooler import Pooler, ServerFacts, TransactionLimits, pooler_refusal, probe, role_settings

log = logging.getLogger(__name__)

COMMIT = Operation.COMMIT
"""The operation of a connection that does not name one: the step and compensation commits."""
INTERRUPT = Operation.RELEASE
"""Cancelling a stopping daemon's statements counts as part of giving its runs back."""

# SQLSTATE classes worth a retry: connection exceptions, transaction rollbacks (serialization
# failure, deadlock), insufficient resources, and the server shutting down or starting up.
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")


def redact(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 (SQLAlchemy costs a command 0.2 s to import)

        parsed = make_url(url)
    except Exception:
        return "<unparsable database URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def asyncpg_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs too: ``postgresql+asyncpg://`` becomes ``postgresql://``."""
    try:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 (SQLAlchemy costs a command 0.2 s to import)

        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"database URL {redact(url)!r} is not a URL: {exc}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL {redact(url)!r} is not a postgresql:// URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# Errors after which the server has ended the session: connection exceptions, an administrator or a
# crash shutting it down, the database dropped, an idle session or idle transaction timed out.
_SESSION_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "57P04", "57P05", "25P03")
_QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request


def too_many_clients(url: str, facts: ServerFacts | None, budget: ConnectionBudget | None, exc: BaseException) -> str:
    """One line for a server with no connection left: its max_connections, the budget, what to change."""
    limit = (
        "unknown (no connection to ask)" if facts is None or facts.max_connections is None else facts.max_connections
    )
    mine = "" if budget is None else f", this daemon's --max-connections {budget.total}"
    return (
        f"{redact(url)} has no connection left ({exc}; its max_connections is {limit}{mine}): "
        "lower --max-connections or run fewer daemons, raise the server's max_connections, "
        "or put a pooler in front (--pooler)"
    )


def session_is_gone(exc: BaseException) -> bool:
    """Whether ``exc`` means the server ended the session: the connection must never be used again."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = exc.sqlstate or ""
    return state.startswith(_SESSION_GONE_SQLSTATES) or getattr(exc, "severity", None) in ("FATAL", "PANIC")


def translate(exc: BaseException) -> DatabaseError | None:
    """The sagad error for a driver error, or None when ``exc`` did not come from the database."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if session_is_gone(exc):
            return DatabaseUnreachable(f"{type(exc).__name__}: {exc}")
        if state == _QUERY_CANCELED:
            return DatabaseTimeout(f"{type(exc).__name__}: {exc}")
        if state.startswith(_TRANSIENT_SQLSTATES):
            return TransientDatabaseError(f"{type(exc).__name__}: {exc}")
        if state == "42P01":  # undefined table
            return SchemaNotReady(f"the database is not migrated ({exc}); run `sagad migrate`")
        return PermanentDatabaseError(f"{type(exc).__name__} [{state}]: {exc}")
    # InternalClientError: the driver found a connection in a state it cannot use (the server's FATAL
    # read, its close not yet), which is dropped like any lost connection; a fresh one can.
    if isinstance(exc, (asyncpg.exceptions.InternalClientError, asyncpg.InterfaceError, OSError, TimeoutError)):
        return DatabaseUnreachable(f"{type(exc).__name__}: {exc}")
    return None


# The array types sagad binds. The driver looks a type up in the catalog the first time a
# connection meets it, ~10 ms each time; meeting them all at connect keeps that out of runs.
_BOUND_TYPES = "SELECT $1::uuid[], $2::bigint[], $3::int[], $4::smallint[], $5::float8[], $6::bool[], $7::text[]"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    # Executed, not just prepared: a bare prepare (Parse/Describe/Flush) leaves the session mid-statement.
    await conn.execute(_BOUND_TYPES, *[None] * 7)


_TRANSACTION_TIMEOUT_FROM = 17  # the first PostgreSQL with transaction_timeout; older ones refuse the name


async def _limit_transactions(conn: asyncpg.Connection, limits: SessionLimits | None) -> None:
    if limits is not None and conn.get_server_version().major >= _TRANSACTION_TIMEOUT_FROM:
        await conn.execute("SELECT set_config('transaction_timeout', $1, false)", ms(limits.transaction))


def _initializer(limits: SessionLimits | None, *, pooled: bool) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def init(conn: asyncpg.Connection) -> None:
        if limits is None:
            await _init_connection(conn)
            return
        # Never cancelled halfway (the pool's acquire timeout would): the driver then closes the
        # connection, and waits, with no limit, for the server to acknowledge a cancel it ignores
        # while it reads the rest of a statement. A server that does not answer is dropped instead.
        deadline = _Deadline(limits.answer)
        with anyio.CancelScope(shield=True), deadline.watching(conn):
            if not pooled:  # a pooled session's settings would leak to other clients: set per transaction
                await _limit_transactions(conn, limits)
            await _init_connection(conn)

    return init


async def _skip_session_reset(conn: asyncpg.Connection) -> None:
    """Nothing to reset: sagad never changes the session state of a pooled connection.

    No settings, advisory locks or cursors (the worker lock and LISTEN have connections of their
    own); the driver's default reset would add a round trip to every statement. The pool still
    rolls back an unfinished transaction, and ``_acquired`` never returns a connection that saw an error.
    """


def _is_closed(conn: asyncpg.Connection) -> bool:
    """Closed, or already detached from its pool by the driver after the connection died."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


@asynccontextmanager
async def _acquired(pool: asyncpg.Pool, within: float | None) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire(timeout=within) as conn:  # the driver cancels a connect it times out
        try:
            yield conn
        except BaseException as exc:
            # A server error leaves the protocol ready for the next statement, unless the server ended
            # the session with it (the driver would fail the next one with "cannot switch to state");
            # anything else (connection lost, cancelled or abandoned mid-statement) may not either.
            if (not isinstance(exc, asyncpg.PostgresError) or session_is_gone(exc)) and not _is_closed(conn):
                conn.terminate()
            raise


async def close_dedicated(conn: asyncpg.Connection) -> None:
    """Close politely if the server answers at once; else just drop the connection."""
    with anyio.CancelScope(shield=True):
        try:
            await conn.close(timeout=1.0)
        except Exception:
            conn.terminate()


_LATE_SECONDS = 0.1
_FULL_SERVER_PAUSE_MAX = 5.0


class _Deadline:
    """Abandons a connection whose work has gone unanswered too long: terminates it, never cancels it.

    A cancelled statement makes the driver send a cancel request over a new connection, to a server
    that may not answer that either; closing the socket needs nothing from the server, whose own
    statement_timeout ends what it was running. The timer is asyncio's, not a task per statement:
    this is the driver's layer, and the driver is asyncio's.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.expired = False
        self._ends = None if seconds is None else asyncio.get_running_loop().time() + seconds
        self._timer: asyncio.TimerHandle | None = None

    def remaining(self) -> float | None:
        if self._ends is None:
            return None
        return max(0.0, self._ends - asyncio.get_running_loop().time())

    @contextmanager
    def watching(self, conn: asyncpg.Connection) -> Iterator[None]:
        """Terminate ``conn`` if the block is still running at the deadline (one block at a time)."""
        remaining = self.remaining()
        if remaining is None:
            yield
            return
        # A bound method, not a closure re-arming itself: that would be a reference cycle holding the
        # connection until the collector's next pass. Cancelling the timer lets go of the method.
        self._timer = asyncio.get_running_loop().call_later(remaining, self._expire, conn, False)
        try:
            yield
        finally:
            self._timer.cancel()

    def _expire(self, conn: asyncpg.Connection, graced: bool) -> None:
        loop = asyncio.get_running_loop()
        if not graced and loop.time() - (self._ends or 0.0) > _LATE_SECONDS:
            # The timer itself is late: this process was frozen or starved, not the server. The
            # answer may be waiting in the socket; one more moment lets the loop read it.
            self._timer = loop.call_later(_LATE_SECONDS, self._expire, conn, True)
            return
        self.expired = True
        if not _is_closed(conn):
            conn.terminate()

    @property
    def shielded(self) -> bool:
        """Work with a deadline is never cut off from outside: it ends, or its deadline abandons it."""
        return self.seconds is not None


class _Reachability:
    """Says when the database was lost and when it answers again: one line each, however many retries."""

    def __init__(self, url: str) -> None:
        self._url = redact(url)
        self._lost_at: float | None = None

    def lost(self, error: DatabaseError) -> None:
        if self._lost_at is None:
            self._lost_at = anyio.current_time()
            log.warning("lost the database %s (%s): retrying until it answers", self._url, str(error))

    def answered(self, asked_at: float) -> None:
        """A statement sent at ``asked_at`` was answered; one sent before the loss was found says nothing."""
        if self._lost_at is not None and asked_at > self._lost_at:
            log.warning("the database %s answers again, after %.1f s", self._url, anyio.current_time() - self._lost_at)
            self._lost_at = None


async def _create_pool(
    dsn: str, size: int, limits: SessionLimits | None, operation: Operation, *, pooled: bool
) -> asyncpg.Pool:
    # No floor (min_size 0): the driver would keep it from a background task that logs a traceback
    # per failed attempt while the database is down. Connections are opened by ``Database._open``
    # and never closed for being idle.
    options: dict[str, Any] = {"command_timeout": 60}
    if limits is not None:
        options = {
            "command_timeout": None,  # the deadlines of Database.connection rule
            "timeout": limits.answer_seconds(operation),
            "server_settings": limits.server_settings(operation),
        }
    if pooled:  # no settings at connect (a pooler refuses them), no named statements (it loses them)
        options = {**options, "server_settings": {}, "statement_cache_size": 0}
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        max_inactive_connection_lifetime=0,
        init=_initializer(limits, pooled=pooled),
        reset=_skip_session_reset,
        **options,
    )


class Database:
    """Pools of connections to one PostgreSQL database: one for work, one for renewals and releases.

    Renewals and releases (``PRIORITY``) have a pool of their own, so that commits waiting for a
    connection, or statements hung in the other pool, can never keep them waiting.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        limits: SessionLimits | None = None,
        renewals: asyncpg.Pool | None = None,
        budget: ConnectionBudget | None = None,
        facts: ServerFacts | None = None,
        direct_url: str | None = None,
    ) -> None:
        self._pool = pool
        self.budget = budget
        """What the daemon may open; None: not a daemon's, its session features all allowed."""
        self.facts = facts
        self.pooled = facts is not None and facts.pooled
        self._renewals = renewals
        self._limits = limits
        self._dsn = asyncpg_dsn(url)
        self._direct_dsn = None if direct_url is None else asyncpg_dsn(direct_url)
        self._per_transaction = (
            TransactionLimits(limits, facts) if self.pooled and limits is not None and facts is not None else None
        )
        self.url = url
        self._reachability = _Reachability(url)
        self._on_timeout: Callable[[Operation], None] = lambda _: None
        # Bumped by refresh_plans(); each server process (one per connection) is at the generation it
        # last planned in, or at the one current when first used (it had planned nothing before).
        self._plans_generation = 0
        self._planned_in: dict[int, int] = {}
        self._busy: set[asyncpg.Connection] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_size: int = 10,
        min_size: int = 1,
        limits: SessionLimits | None = None,
        budget: ConnectionBudget | None = None,
        pooler: Pooler = Pooler.AUTO,
        direct_url: str | None = None,
    ) -> Database:
        """Pools of up to ``max_size`` connections, ``min_size`` of them opened at once.

        ``limits`` (a daemon's, derived from its lease) bound what the server lets each session hold
        and how long sagad waits for an answer; without them, a statement may take a minute. A
        daemon's ``budget`` sizes the pools instead, every connection opened at once; a daemon waits
        for a server that has no connection left (too many clients), where a command gives up.
        ``pooler`` says whether ``url`` leads to a pooler in transaction mode (``auto``: find out);
        ``direct_url`` gives the sessions for LISTEN and the worker lock that a pooler cannot.
        """
        dsn = asyncpg_dsn(url)
        if direct_url is not None:
            asyncpg_dsn(direct_url)  # a ConfigError now, before anything is opened
        for attempt in itertools.count():
            try:
                return await cls._connect(url, dsn, max_size, min_size, limits, budget, pooler, direct_url)
            except (TooManyClients, DatabaseTimeout) as busy:
                # A full server, or one too loaded to answer in time: a daemon waits for it, a command gives up.
                if budget is None:
                    raise ConfigError(str(busy)) from None
                # Once, as a string (the daemon's log filter drops lines that carry an outage's error).
                log.log(logging.DEBUG if attempt else logging.WARNING, "%s; retrying", str(busy))
                await anyio.sleep(min(_FULL_SERVER_PAUSE_MAX, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    @classmethod
    async def _connect(
        cls,
        url: str,
        dsn: str,
        max_size: int,
        min_size: int,
        limits: SessionLimits | None,
        budget: ConnectionBudget | None,
        pooler: Pooler,
        direct_url: str | None,
    ) -> Database:
        db: Database | None = None
        found: ServerFacts | None = None
        try:
            found = await probe(dsn, None if limits is None else limits.answer)
            pooled = found.pooled if pooler is Pooler.AUTO else pooler is Pooler.TRANSACTION
            facts = replace(found, pooled=pooled)
            if budget is not None:
                if pooled and direct_url is None:
                    budget = budget.without_sessions()
                max_size = min_size = budget.work
            priority = 2 if budget is None else budget.priority
            pool = await _create_pool(dsn, max_size, limits, Operation.COMMIT, pooled=pooled)
            renewals = None if limits is None else await _create_pool(dsn, priority, limits, RENEWAL, pooled=pooled)
            db = cls(pool, url, limits=limits, renewals=renewals, budget=budget, facts=facts, direct_url=direct_url)
            await db._open(min_size)
            if limits is not None and db._per_transaction is not None and db._per_transaction.statement(COMMIT):
                log.info("through a pooler, limits are set per transaction; to spare that: %s", role_settings(limits))
        except asyncpg.TooManyConnectionsError as exc:
            if db is not None:
                await db.close()
            raise TooManyClients(too_many_clients(url, found, budget, exc)) from None
        except Exception as exc:
            if db is not None:
                await db.close()
            refused = pooler_refusal(exc)
            if refused is not None:
                raise ConfigError(f"cannot connect to {redact(url)}: {refused}") from None
            mapped = translate(exc)
            if mapped is None and not isinstance(exc, (ValueError, OverflowError, asyncpg.PostgresError)):
                raise
            if isinstance(mapped, DatabaseTimeout):
                raise DatabaseTimeout(f"cannot connect to {redact(url)}: {mapped}") from None
            raise ConfigError(f"cannot connect to {redact(url)}: {type(exc).__name__}: {exc}") from None
        return db

    async def _open(self, n: int) -> None:
        """Open ``n`` connections (and one for renewals) now, so that the first runs do not wait for them.

        All at once: each takes several round trips (connecting, its settings, the array types), so
        one after another they took a daemon 100 ms from its database 12 seconds to start.
        """
        pools = [self._pool] * n + ([self._renewals] if self._renewals is not None else [])
        taken: list[tuple[asyncpg.Pool, asyncpg.Connection]] = []
        failed: list[Exception] = []

        async def take(pool: asyncpg.Pool) -> None:
            try:
                taken.append((pool, await pool.acquire()))
            except Exception as exc:  # the first failure is the one to report: the others stop with it
                failed.append(exc)
                opening.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as opening:
                for pool in pools:
                    opening.start_soon(take, pool)
        finally:
            for pool, conn in taken:
                await pool.release(conn)
        if failed:
            raise failed[0]

    def count_timeouts(self, observer: Callable[[Operation], None]) -> None:
        """Call ``observer(operation)`` for each statement abandoned or cancelled for its time limit."""
        self._on_timeout = observer

    def refresh_plans(self) -> None:
        """Have every connection re-plan its prepared statements before it next runs one.

        PostgreSQL keeps a prepared statement's generic plan until the table's statistics change.
        Plans made while the tables were nearly empty (a fresh database) scan whole tables, and
        grow slower with them until autovacuum analyzes; call this when the tables have grown.
        """
        self._plans_generation += 1

    async def _replan_if_stale(self, conn: asyncpg.Connection) -> None:
        if self.pooled:
            return  # no named statements to re-plan: each is planned afresh
        pid = conn.get_server_pid()
        if self._planned_in.setdefault(pid, self._plans_generation) < self._plans_generation:
            await conn.execute("DISCARD PLANS")
            self._planned_in[pid] = self._plans_generation

    async def close(self) -> None:
        await self._pool.close()
        if self._renewals is not None:
            await self._renewals.close()

    def _deadline(self, operation: Operation) -> _Deadline:
        return _Deadline(None if self._limits is None else self._limits.answer_seconds(operation))

    def _failure(self, exc: Exception, operation: Operation, deadline: _Deadline) -> Exception:
        """The error to raise for ``exc``: sagad's, counted and reported; ``exc`` itself when not the database's."""
        if deadline.expired or (deadline.seconds is not None and isinstance(exc, TimeoutError)):
            self._on_timeout(operation)
            lost = DatabaseUnreachable(f"no answer to {operation} within {deadline.seconds:.3g} s; connection dropped")
            self._reachability.lost(lost)
            return lost
        if isinstance(exc, asyncpg.TooManyConnectionsError):
            full = TooManyClients(too_many_clients(self.url, self.facts, self.budget, exc))
            self._reachability.lost(full)
            return full
        refused = pooler_refusal(exc)
        if refused is not None:
            return PoolerRefused(refused)
        mapped = translate(exc)
        if mapped is None:
            return exc
        if isinstance(mapped, DatabaseTimeout):
            self._on_timeout(operation)
            return DatabaseTimeout(f"{operation} cancelled by the server at its time limit: {mapped}")
        if isinstance(mapped, DatabaseUnreachable):
            self._reachability.lost(mapped)
        return mapped

    @asynccontextmanager
    async def transaction(self, operation: Operation = COMMIT) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction; driver errors leave it as sagad's DatabaseErrors."""
        async with self.connection(operation) as conn:
            if conn.is_in_transaction():  # begun with the limits of a pooled session
                yield conn
                return
            async with conn.transaction():
                yield conn

    @asynccontextmanager
    async def _limited(self, conn: asyncpg.Connection, operation: Operation) -> AsyncIterator[None]:
        """Through a pooler, the work in a transaction of its own that sets the limits a session cannot hold."""
        begin = None if self._per_transaction is None else self._per_transaction.statement(operation)
        if begin is None:
            yield
            return
        await conn.execute(begin)  # one round trip: BEGIN and the SET LOCALs as one simple query
        try:
            yield
        except asyncpg.PostgresError as exc:
            if not session_is_gone(exc) and not _is_closed(conn):
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    @asynccontextmanager
    async def connection(self, operation: Operation = COMMIT) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection outside any transaction, for one piece of work named ``operation``.

        Under session limits, the work is never cut off from outside (a stop waits for it, so no
        statement is left half sent), and it is abandoned once unanswered past its deadline: the
        connection is terminated, never reused, and the caller gets a DatabaseUnreachable.
        """
        deadline = self._deadline(operation)
        pool = self._renewals if operation in PRIORITY and self._renewals is not None else self._pool
        asked_at = anyio.current_time()
        try:
            with anyio.CancelScope(shield=deadline.shielded):
                async with _acquired(pool, deadline.remaining()) as conn:
                    with deadline.watching(conn):
                        self._busy.add(conn)
                        try:
                            await self._replan_if_stale(conn)
                            async with self._limited(conn, operation):
                                yield conn
                        finally:
                            self._busy.discard(conn)
        except Exception as exc:
            error = self._failure(exc, operation, deadline)
            if error is exc:
                raise
            raise error from exc
        self._reachability.answered(asked_at)

    @property
    def listens(self) -> bool:
        """Whether a session may LISTEN for submissions: the budget has room, and no pooler is in the way."""
        room = self.budget is None or self.budget.listen
        return room and (self._direct_dsn is not None or not self.pooled)

    @property
    def locks(self) -> bool:
        """Whether a session may hold the worker lock: the budget has room, and no pooler is in the way."""
        room = self.budget is None or self.budget.lock
        return room and (self._direct_dsn is not None or not self.pooled)

    @property
    def busy(self) -> bool:
        """Whether a pooled connection has work under way."""
        return bool(self._busy)

    async def interrupt(self) -> None:
        """Have the server cancel the statements under way on pooled connections: a stop that will not wait.

        Their work is shielded from cancellation (see ``connection``); the server's cancel ends a
        statement waiting on a lock at once, and its transaction rolls back, freeing the run rows.
        """
        if self.pooled:
            return  # a pooler's sessions hide the server's pids: statement_timeout ends what runs
        pids = [conn.get_server_pid() for conn in self._busy if not _is_closed(conn)]
        if pids:
            await self.fetch("SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) AS pid", pids, operation=INTERRUPT)

    async def open_dedicated(self, operation: Operation) -> asyncpg.Connection:
        """A connection of its own, outside the pools (LISTEN, a session lock); run its statements under ``bounded``."""
        deadline = self._deadline(operation)
        options: dict[str, Any] = {}
        if self._limits is not None:
            options = {"timeout": deadline.seconds, "server_settings": self._limits.server_settings(operation)}
        session = self._direct_dsn is not None or not self.pooled
        if not session:  # never for LISTEN or the lock (see ``listens`` and ``locks``); only what a pooler allows
            options = {**options, "server_settings": {}, "statement_cache_size": 0}
        try:
            with anyio.CancelScope(shield=deadline.shielded):
                conn: asyncpg.Connection = await asyncpg.connect(self._direct_dsn or self._dsn, **options)
                try:
                    if session:
                        await _limit_transactions(conn, self._limits)
                except BaseException:
                    conn.terminate()
                    raise
        except Exception as exc:
            error = self._failure(exc, operation, deadline)
            if error is exc:
                raise
            raise error from exc
        return conn

    @asynccontextmanager
    async def dedicated(self, operation: Operation) -> AsyncIterator[asyncpg.Connection]:
        """``open_dedicated`` for as long as the block lasts."""
        conn = await self.open_dedicated(operation)
        try:
            yield conn
        finally:
            await close_dedicated(conn)

    @asynccontextmanager
    async def bounded(self, conn: asyncpg.Connection, operation: Operation) -> AsyncIterator[None]:
        """Statements on a ``dedicated`` connection, under the deadline of ``operation``."""
        deadline = self._deadline(operation)
        asked_at = anyio.current_time()
        try:
            with anyio.CancelScope(shield=deadline.shielded), deadline.watching(conn):
                yield
        except Exception as exc:
            if not _is_closed(conn) and (not isinstance(exc, asyncpg.PostgresError) or session_is_gone(exc)):
                conn.terminate()
            error = self._failure(exc, operation, deadline)
            if error is exc:
                raise
            raise error from exc
        self._reachability.answered(asked_at)

    async def fetch(self, query: str, *args: Any, operation: Operation = COMMIT) -> list[asyncpg.Record]:
        async with self.connection(operation) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
