"""Wakes claimers when runs are submitted (LISTEN/NOTIFY), so they need not poll tightly."""

from __future__ import annotations

import logging
from typing import Any

import anyio

from sagad.errors import TransientDatabaseError
from sagad.store.db import Database, _is_closed
from sagad.store.runs import SUBMITTED_CHANNEL

log = logging.getLogger(__name__)


class SubmissionListener:
    """Listens on the submission channel over one dedicated connection, reconnecting as needed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._submitted = anyio.Event()

    def _notified(self, *_: Any) -> None:
        self._submitted.set()

    async def run(self) -> None:
        while True:
            try:
                async with self._db.connection() as conn:
                    closed = anyio.Event()
                    conn.add_termination_listener(lambda _, closed=closed: closed.set())
                    await conn.add_listener(SUBMITTED_CHANNEL, self._notified)
                    try:
                        await closed.wait()
                    finally:
                        if not _is_closed(conn):
                            with anyio.CancelScope(shield=True):
                                await conn.remove_listener(SUBMITTED_CHANNEL, self._notified)
            except TransientDatabaseError as error:
                log.info("submission listener lost its connection: %s", error)
            await anyio.sleep(1.0)

    async def wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._submitted.wait()
        self._submitted = anyio.Event()
