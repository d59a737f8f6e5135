"""Wakes claimers when runs are submitted (LISTEN/NOTIFY), so they need not poll tightly."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import asyncpg

from sagad.domain.db_operations import Operation
from sagad.errors import DatabaseUnreachable, TransientDatabaseError
from sagad.store.db import Database
from sagad.store.runs import SUBMITTED_CHANNEL

log = logging.getLogger(__name__)


class SubmissionListener:
    """Listens on the submission channel over a connection of its own, reconnecting as needed.

    An idle connection whose server went away may never say so: every ``check_seconds`` without
    news, one trivial statement (under the ``listen`` deadline) tells a quiet channel from a dead one.
    """

    def __init__(self, db: Database, *, check_seconds: float = 10.0, retry_seconds: float = 1.0) -> None:
        self._db = db
        self._check_seconds = check_seconds
        self._retry_seconds = retry_seconds
        self._submitted = anyio.Event()

    def _notified(self, *_: Any) -> None:
        self._submitted.set()

    async def run(self) -> None:
        while True:
            try:
                async with self._db.dedicated(Operation.LISTEN) as conn:
                    closed = anyio.Event()
                    conn.add_termination_listener(lambda _, closed=closed: closed.set())
                    async with self._db.bounded(conn, Operation.LISTEN):
                        await conn.add_listener(SUBMITTED_CHANNEL, self._notified)
                    # Whatever was submitted while no connection listened: claim once, now.
                    self._submitted.set()
                    await self._watch(conn, closed)
            except TransientDatabaseError as error:
                level = logging.DEBUG if isinstance(error, DatabaseUnreachable) else logging.INFO
                log.log(level, "submission listener lost its connection: %s", error)
            await anyio.sleep(self._retry_seconds)

    async def _watch(self, conn: asyncpg.Connection, closed: anyio.Event) -> None:
        while not closed.is_set():
            with anyio.move_on_after(self._check_seconds):
                await closed.wait()
            if not closed.is_set():
                async with self._db.bounded(conn, Operation.LISTEN):
                    await conn.fetchval("SELECT 1")

    async def wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._submitted.wait()
        self._submitted = anyio.Event()


class Polling:
    """The wakeup without LISTEN (no session for it, or a pooler): the claimer polls at its interval."""

    async def run(self) -> None:
        return None

    async def wait(self, seconds: float) -> None:
        await anyio.sleep(seconds)
