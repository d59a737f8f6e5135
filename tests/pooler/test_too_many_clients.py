"""A server with no connection left: one line saying why and what to change, and a daemon that waits for room."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from functools import partial

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_ended_as_built, submit_mix
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import wait_until
from tests.processes import Daemon, sagad

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MAX_CONNECTIONS = 8


@pytest.fixture
def tight_server() -> Iterator[ThrowawayServer]:
    server = ThrowawayServer(max_connections=str(MAX_CONNECTIONS), superuser_reserved_connections="0")
    try:
        server.launch()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def tight_url(tight_server: ThrowawayServer) -> str:
    return tight_server.create_database("sagad_tight")


async def test_a_full_server_is_named_in_one_line_and_the_daemon_waits_for_room(tight_url: str, fleet: Fleet) -> None:
    crowd = [await asyncpg.connect(asyncpg_dsn(tight_url)) for _ in range(MAX_CONNECTIONS)]
    try:
        refused = await anyio.to_thread.run_sync(
            lambda: sagad("status", "00000000-0000-0000-0000-000000000000", "--database-url", tight_url)
        )
        assert refused.returncode == 1
        [line] = refused.stderr.splitlines()
        assert "too many clients" in line and "max_connections" in line and "--max-connections" in line
        # Room for one: a daemon asks the server its max_connections, then finds no room for its pools.
        await crowd.pop().close()

        stopped = fleet.start(tight_url, "stopped-while-waiting", "--max-connections", "4")
        waiting = fleet.start(tight_url, "waits", "--max-connections", "4")
        for daemon in (stopped, waiting):
            await wait_until(partial(_said, daemon, "too many clients"), seconds=20)
        [said] = [line for line in waiting.log.read_text().splitlines() if "too many clients" in line][:1]
        assert f"its max_connections is {MAX_CONNECTIONS}" in said
        assert "--max-connections 4" in said and "retrying" in said
        stopped.signal(signal.SIGTERM)
        assert await stopped.wait(10) == 0
    finally:
        for conn in crowd:
            await conn.close()
    await waiting.ready()
    db = await Database.connect(tight_url, max_size=1)
    try:
        outcomes = await submit_mix(RunStore(db), 20, mix=(Ending.COMPLETED,))
        await assert_ended_as_built(db, tight_url, outcomes, seconds=30)
    finally:
        await db.close()
    waiting.signal(signal.SIGTERM)
    assert await waiting.wait() == 0


async def _said(daemon: Daemon, words: str) -> bool:
    return words in daemon.log.read_text()
