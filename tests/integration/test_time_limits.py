"""What the server bounds for a daemon's sessions, and what a daemon does with a dead or stuck connection."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.domain.db_operations import Operation
from sagad.errors import DatabaseTimeout, DatabaseUnreachable
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.limits import RENEWAL, SessionLimits
from sagad.store.runs import RunStore
from tests.helpers import running_daemon

pytestmark = pytest.mark.anyio

_SETTINGS = (
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_user_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "transaction_timeout",  # PostgreSQL 17 and later
)


async def _settings(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(_SETTINGS))
    settings = {row["name"]: row["setting"] for row in rows}
    if await conn.fetchval("SELECT inet_client_addr() IS NULL"):
        # Over a unix socket, the server ignores the TCP settings and shows them as 0.
        settings = {name: value for name, value in settings.items() if not name.startswith("tcp_")}
    return settings


async def test_every_session_of_a_daemon_carries_limits_derived_from_its_lease(database_url: str) -> None:
    limits = SessionLimits.for_lease(30)
    daemon_db = await Database.connect(database_url, limits=limits)
    try:
        async with daemon_db.connection(Operation.CLAIM) as conn:
            pooled = await _settings(conn)
        async with daemon_db.connection(RENEWAL) as conn:
            renewing = await _settings(conn)
        async with daemon_db.dedicated(Operation.LOCK) as conn:
            dedicated = await _settings(conn)
    finally:
        await daemon_db.close()
    expected = {
        "statement_timeout": "15000",
        "idle_in_transaction_session_timeout": "5000",
        "tcp_user_timeout": "5000",
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "2",  # round(30 / 12)
        "tcp_keepalives_count": "3",
    }
    if "transaction_timeout" in pooled:
        expected["transaction_timeout"] = "20000"
    assert pooled == {name: value for name, value in expected.items() if name in pooled}
    assert set(pooled) >= {"statement_timeout", "idle_in_transaction_session_timeout"}
    assert renewing == {**pooled, "statement_timeout": "3750"}
    assert dedicated == pooled


async def test_a_transaction_left_open_by_a_frozen_client_is_ended_and_its_locks_freed(
    database_url: str, db: Database, runs: RunStore
) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.COMPLETED, 1))
    limits = SessionLimits.for_lease(1.2)  # idle in transaction: 0.2 s
    daemon_db = await Database.connect(database_url, limits=limits)
    try:
        frozen = await daemon_db.open_dedicated(Operation.COMMIT)
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE", run_id)
        locked_at = time.monotonic()
        # The client says nothing more, as a frozen daemon would; the row is free again soon all the same.
        with anyio.fail_after(5):
            while True:
                try:
                    await db.fetch("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE NOWAIT", run_id)
                    break
                except Exception:  # lock_not_available, until the server ends the frozen session
                    await anyio.sleep(0.02)
        freed_after = time.monotonic() - locked_at
        with pytest.raises(DatabaseUnreachable):
            async with daemon_db.bounded(frozen, Operation.COMMIT):
                await frozen.fetchval("SELECT 1")
    finally:
        await daemon_db.close()
    assert freed_after < limits.idle_in_transaction + 1.0


async def test_a_statement_waiting_on_a_lock_is_cancelled_at_its_limit_counted_and_its_connection_kept(
    database_url: str, db: Database, runs: RunStore
) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.COMPLETED, 2))
    limits = SessionLimits.for_lease(1.0)  # statement: 0.5 s
    daemon_db = await Database.connect(database_url, max_size=1, limits=limits)
    timeouts: Counter[str] = Counter()
    daemon_db.count_timeouts(lambda operation: timeouts.update([operation]))
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        [pid_before] = await daemon_db.fetch("SELECT pg_backend_pid() AS pid")
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE", run_id)
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout):
            await daemon_db.fetch("UPDATE workflow_runs SET updated_at = now() WHERE id = $1", run_id)
        waited = time.monotonic() - started
        [pid_after] = await daemon_db.fetch("SELECT pg_backend_pid() AS pid")
    finally:
        await holder.close()
        await daemon_db.close()
    assert limits.statement <= waited < limits.answer
    assert timeouts == {"commit": 1}
    assert pid_after["pid"] == pid_before["pid"], "a statement the server cancelled leaves its connection usable"


async def test_a_connection_whose_session_the_server_ended_is_dropped(database_url: str, db: Database) -> None:
    single = await Database.connect(database_url, max_size=1)
    try:
        [first] = await single.fetch("SELECT pg_backend_pid() AS pid")

        async def terminate_soon() -> None:
            await anyio.sleep(0.3)
            await db.fetch("SELECT pg_terminate_backend($1)", first["pid"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(terminate_soon)
            # The server ends the session mid-statement: AdminShutdown (57P01), a PostgresError.
            with pytest.raises(DatabaseUnreachable, match=r"AdminShutdown|ConnectionDoesNotExist"):
                await single.fetch("SELECT pg_sleep(5)")
        # The next statement gets a fresh connection, never the dead one ("cannot switch to state 12").
        [second] = await single.fetch("SELECT pg_backend_pid() AS pid")
        assert second["pid"] != first["pid"]
    finally:
        await single.close()


async def test_a_transaction_frozen_between_the_halves_of_a_statement_is_ended_by_a_peer(
    database_url: str, db: Database, runs: RunStore
) -> None:
    run_id, _ = await runs.submit(sample_brief(Ending.COMPLETED, 3))
    limits = SessionLimits.for_lease(1.2)
    # A daemon's session limits, but not the transaction_timeout of PostgreSQL 17, which would end it too.
    frozen = await asyncpg.connect(asyncpg_dsn(database_url), server_settings=limits.server_settings())
    try:
        await frozen.execute("BEGIN")
        await frozen.execute("UPDATE workflow_runs SET updated_at = now() WHERE id = $1", run_id)
        # The driver's first half of a new statement (Parse/Describe/Flush); the frozen client never
        # sends the second. The session is "active", reading from its client: PostgreSQL before 17
        # ignores statement_timeout there, and it is not "idle in transaction".
        await frozen.prepare("DELETE FROM qc_issues WHERE run_id = $1")
        frozen_at = time.monotonic()
        async with running_daemon(db, worker="peer", lease_seconds=1.2, reap_seconds=0.2) as peer:
            with anyio.fail_after(10):
                while True:
                    try:
                        await db.fetch("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE NOWAIT", run_id)
                        break
                    except Exception:  # lock_not_available, until the frozen session is ended
                        await anyio.sleep(0.02)
            freed_after = time.monotonic() - frozen_at
            ended = peer.metrics.registry.get_sample_value("sagad_stalled_sessions_ended_total") or 0
    finally:
        frozen.terminate()
    assert ended == 1
    assert freed_after < limits.idle_in_transaction + 1.5
