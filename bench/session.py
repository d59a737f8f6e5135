"""The store's own statements on one connection, inside a transaction its user rolls back.

For probes that must change nothing: what kind of run id the store makes, or how the daemon's
statements run on a filled database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from sagad.store.db import COMMIT, Database, asyncpg_dsn


class OneConnection(Database):
    """A ``Database`` whose every statement runs on one connection (and in its transaction, if open)."""

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        super().__init__(pool=None, url=url)
        self.conn = conn

    @asynccontextmanager
    async def connection(self, operation: str = COMMIT) -> AsyncIterator[asyncpg.Connection]:
        yield self.conn


@asynccontextmanager
async def rolled_back(url: str) -> AsyncIterator[OneConnection]:
    """A transaction on a connection of its own, rolled back at the end whatever happened in it."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield OneConnection(conn, url)
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
