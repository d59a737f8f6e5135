"""Telling a dead daemon from a slow one: a lock on each worker id, held for the daemon's whole life.

Each daemon holds a session-level advisory lock on its worker id, on a connection of its own.
PostgreSQL releases it the moment that session ends: the daemon was killed, its host went away (the
server's TCP keepalives end the session), or its connection was cut. A worker that still holds
unexpired leases while its lock is free is gone, and its runs need not wait out their leases. A frozen
daemon keeps its session, hence its lock: its runs wait for their leases, as they must.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import anyio
import asyncpg

from sagad.domain.db_operations import Operation
from sagad.domain.runs import WorkerId
from sagad.errors import TransientDatabaseError, WorkerIdInUse
from sagad.store.db import Database, close_dedicated

log = logging.getLogger(__name__)

# A worker's lock key is hashtextextended(worker id, 370349): the seed (written out in both statements)
# keeps sagad's keys apart from other users of 64-bit advisory locks in the same database.
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 370349))"

# A peer's reaper holds a worker's lock for the instant of one statement: a start retries for a while.
_TAKE_ATTEMPTS = 10
_TAKE_PAUSE_SECONDS = 0.1

# Workers with unexpired leases whose lock nobody holds ($1: this worker, never reaped by itself). Only
# those already found so in the previous pass ($2) have their runs made claimable: a daemon whose lock
# connection was cut takes its lock again within a pass, and is not taken for dead.
#
# Also ended: sessions of this role that touched run rows in a transaction and have been waiting on
# their client, in the middle of a statement, for $3 seconds. A daemon frozen between the two halves of a
# statement (Parse/Describe/Flush, then Bind/Execute/Sync) leaves its session "active": PostgreSQL before
# 17 ignores statement_timeout while it reads from the client, and idle_in_transaction_session_timeout
# does not apply; the row locks would be held for as long as the daemon stays frozen.
_FREE_RUNS_OF_DEAD = """
    WITH holders AS MATERIALIZED (
        SELECT DISTINCT claimed_by AS worker FROM workflow_runs
        WHERE available_at > now() AND claimed_by IS NOT NULL AND claimed_by <> $1
    ),
    unlocked AS MATERIALIZED (
        SELECT worker FROM holders WHERE pg_try_advisory_xact_lock(hashtextextended(worker, 370349))
    ),
    abandoned AS (
        SELECT r.id FROM workflow_runs r JOIN unlocked u ON u.worker = r.claimed_by
        WHERE u.worker = ANY($2::text[]) AND r.available_at > now() AND r.status IN ('running', 'compensating')
        FOR NO KEY UPDATE OF r SKIP LOCKED
    ),
    freed AS (
        UPDATE workflow_runs r SET available_at = now(), updated_at = now()
        FROM abandoned a WHERE r.id = a.id
        RETURNING r.claimed_by
    ),
    stalled AS MATERIALIZED (
        SELECT pg_terminate_backend(a.pid) AS ended FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.usename = current_user AND a.pid <> pg_backend_pid()
          AND a.state = 'active' AND a.wait_event IN ('ClientRead', 'ClientWrite')
          AND a.state_change < now() - make_interval(secs => $3)
          AND EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.pid = a.pid AND l.relation = 'workflow_runs'::regclass
              AND l.mode IN ('RowShareLock', 'RowExclusiveLock'))
    )
    SELECT u.worker, (SELECT count(*) FROM freed f WHERE f.claimed_by = u.worker) AS freed,
           (SELECT count(*) FROM stalled WHERE ended) AS sessions_ended
    FROM unlocked u
    UNION ALL
    SELECT NULL, 0, (SELECT count(*) FROM stalled WHERE ended)
"""


class WorkerLock:
    """This daemon's lock on its worker id: taken at start, kept (and taken again) until the daemon stops."""

    def __init__(self, db: Database, worker: WorkerId, *, check_seconds: float, retry_seconds: float = 0.2) -> None:
        self._db = db
        self._worker = worker
        self._check_seconds = check_seconds
        self._retry_seconds = retry_seconds
        self._conn: asyncpg.Connection | None = None
        self._gone = anyio.Event()
        self.held = False

    async def take(self) -> None:
        """Take the lock on a connection of its own, kept open; WorkerIdInUse if a live daemon holds it."""
        conn = await self._db.open_dedicated(Operation.LOCK)
        try:
            for _ in range(_TAKE_ATTEMPTS):
                async with self._db.bounded(conn, Operation.LOCK):
                    taken = await conn.fetchval(_TRY_LOCK, self._worker)
                if taken:
                    break
                await anyio.sleep(_TAKE_PAUSE_SECONDS)
        except BaseException:
            conn.terminate()
            raise
        if not taken:
            conn.terminate()
            raise WorkerIdInUse(
                f"worker id {self._worker!r} is in use by a live daemon (it holds the worker lock); "
                "give this daemon another --worker-id"
            )
        gone = self._gone = anyio.Event()
        conn.add_termination_listener(lambda _: gone.set())
        self._conn, self.held = conn, True

    async def keep(self) -> None:
        """Watch the lock's session; when it ends (or stops answering), take the lock again."""
        refused = False
        while True:
            if self.held:
                with anyio.move_on_after(self._check_seconds):
                    await self._gone.wait()
                if await self._answers():
                    continue
                self.held = False
                log.warning("lost the lock on worker id %r with its connection: taking it again", self._worker)
            try:
                await self.take()
            except TransientDatabaseError:
                await anyio.sleep(self._retry_seconds)
                continue
            except WorkerIdInUse as error:
                if not refused:
                    log.error("%s; until then, peers may take over this daemon's runs", error)  # noqa: TRY400
                refused = True
                await anyio.sleep(self._retry_seconds)
                continue
            refused = False
            log.warning("holds the lock on worker id %r again", self._worker)

    async def _answers(self) -> bool:
        """Whether the lock's session is still there: its connection open, and answering."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            async with self._db.bounded(conn, Operation.LOCK):
                await conn.fetchval("SELECT 1")
        except TransientDatabaseError:
            conn.terminate()
            return False
        return True

    async def release(self) -> None:
        """Close the lock's connection: the server releases the lock with the session."""
        conn, self._conn, self.held = self._conn, None, False
        if conn is not None:
            await close_dedicated(conn)


class DeadWorkers:
    """Finds workers whose daemon is gone and makes their runs claimable; ends sessions stalled mid-statement."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def free_runs_of_dead(
        self, me: WorkerId, suspects: Collection[WorkerId], stalled_seconds: float
    ) -> tuple[dict[WorkerId, int], int]:
        """Every other worker holding live leases without its lock, with the runs freed (``suspects`` only);
        and how many sessions stalled on their client for ``stalled_seconds`` inside a transaction were ended."""
        rows = await self._db.fetch(_FREE_RUNS_OF_DEAD, me, list(suspects), stalled_seconds, operation=Operation.REAP)
        found = {WorkerId(row["worker"]): int(row["freed"]) for row in rows if row["worker"] is not None}
        return found, int(rows[-1]["sessions_ended"])
