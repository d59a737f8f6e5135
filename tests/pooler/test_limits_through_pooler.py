"""Through PgBouncer in transaction mode, the server-side limits hold per transaction, or come from the role."""

from __future__ import annotations

import asyncpg
import pytest

from sagad.domain.db_operations import Operation
from sagad.errors import DatabaseTimeout
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.limits import SessionLimits
from sagad.store.pooler import Pooler

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LIMITS = SessionLimits.for_lease(2.0)  # statement 1 s, renewals 250 ms, idle in transaction 334 ms


async def test_a_pooled_daemons_work_runs_under_its_limits_and_leaves_no_setting_behind(pooled_url: str) -> None:
    db = await Database.connect(pooled_url, max_size=1, limits=LIMITS)
    try:
        assert db.pooled and not db.listens and not db.locks
        async with db.connection(Operation.COMMIT) as conn:
            assert await conn.fetchval("SELECT current_setting('statement_timeout')") == "1s"
        async with db.connection(Operation.RENEWAL) as conn:
            assert await conn.fetchval("SELECT current_setting('statement_timeout')") == "250ms"
        async with db.transaction() as conn:  # one transaction, not one inside another
            assert await conn.fetchval("SELECT current_setting('idle_in_transaction_session_timeout')") == "334ms"
        with pytest.raises(DatabaseTimeout):
            await db.fetch("SELECT pg_sleep(1.2)")
        # Repeated statements with arguments: no named prepared statement to collide on the server's sessions.
        for n in range(20):
            assert (await db.fetch("SELECT $1::int + 1 AS n", n))[0]["n"] == n + 1
    finally:
        await db.close()
    plain = await asyncpg.connect(asyncpg_dsn(pooled_url), statement_cache_size=0)
    try:
        assert await plain.fetchval("SELECT current_setting('statement_timeout')") == "0"
    finally:
        await plain.close()


async def test_limits_set_on_the_role_spare_the_per_transaction_settings(
    pooled_url: str, throwaway_database_url: str
) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(throwaway_database_url))
    try:
        await admin.execute("ALTER DATABASE sagad_chaos SET statement_timeout = '1s'")
        await admin.execute("ALTER DATABASE sagad_chaos SET idle_in_transaction_session_timeout = '300ms'")
    finally:
        await admin.close()
    db = await Database.connect(pooled_url, max_size=1, limits=LIMITS, pooler=Pooler.TRANSACTION)
    try:
        async with db.connection(Operation.COMMIT) as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT current_setting('statement_timeout')") == "1s"
        async with db.connection(Operation.RENEWAL) as conn:  # stricter than the role: set per transaction
            assert conn.is_in_transaction()
    finally:
        await db.close()


async def test_a_direct_url_gives_the_sessions_back(pooled_url: str, throwaway_database_url: str) -> None:
    db = await Database.connect(pooled_url, max_size=1, limits=LIMITS, direct_url=throwaway_database_url)
    try:
        assert db.pooled and db.listens and db.locks
        async with db.dedicated(Operation.LOCK) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == conn.get_server_pid()
    finally:
        await db.close()
