"""Wakes a waiting client when runs end (LISTEN on the terminal transition), or says it cannot."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import asyncpg

from sagad.domain.db_operations import Operation
from sagad.domain.runs import RunId
from sagad.errors import DatabaseError
from sagad.store.db import Database
from sagad.store.operations import FINISHED_CHANNEL

log = logging.getLogger(__name__)


class FinishWatcher:
    """One LISTEN connection for every wait of a client; ``listening`` is False where LISTEN is refused.

    A pooler in transaction mode, or a server that drops the connection, turns it off: the waits it
    served wake at once and poll from then on.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self._waiting: dict[RunId, list[anyio.Event]] = {}
        self.listening = False

    async def open(self) -> bool:
        """Start listening; False (and a debug line) if the database will not let it."""
        if not self._db.listens:  # behind a pooler in transaction mode LISTEN is accepted and never hears
            log.debug("cannot listen for finished runs behind a pooler, polling instead")
            return False
        try:
            conn = await self._db.open_dedicated(Operation.LISTEN)
        except DatabaseError as error:
            log.debug("cannot listen for finished runs, polling instead: %s", error)
            return False
        try:
            async with self._db.bounded(conn, Operation.LISTEN):
                await conn.add_listener(FINISHED_CHANNEL, self._notified)
        except (DatabaseError, asyncpg.PostgresError) as error:
            log.debug("cannot listen for finished runs, polling instead: %s", error)
            conn.terminate()
            return False
        conn.add_termination_listener(self._lost)
        self._conn = conn
        self.listening = True
        return True

    def _notified(self, *args: Any) -> None:
        payload = args[3]
        try:
            run_id = RunId(uuid.UUID(payload))
        except ValueError:
            return
        for event in self._waiting.get(run_id, ()):
            event.set()

    def _lost(self, *_: Any) -> None:
        self.listening = False
        for events in self._waiting.values():
            for event in events:
                event.set()

    def subscribe(self, run_id: RunId) -> anyio.Event:
        """An event set when ``run_id`` ends (or when listening stops); subscribe before reading the run."""
        event = anyio.Event()
        self._waiting.setdefault(run_id, []).append(event)
        return event

    def unsubscribe(self, run_id: RunId, event: anyio.Event) -> None:
        events = self._waiting.get(run_id, [])
        if event in events:
            events.remove(event)
        if not events:
            self._waiting.pop(run_id, None)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.listening = False
        if conn is not None:
            conn.remove_termination_listener(self._lost)
            with anyio.move_on_after(2, shield=True):
                await conn.close()
            if not conn.is_closed():
                conn.terminate()
