"""A server with no connection left: one line saying why and what to change, and a daemon that waits for room."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from functools import partial

import anyio
import asyncpg
import pytest

from sagad.content.samples import Ending
from sagad.domain.db_operations import Operation
from sagad.errors import DatabaseUnreachable, TooManyClients
from sagad.store.budget import ConnectionBudget
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.limits import SessionLimits
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_ended_as_built, submit_mix
from tests.chaos.server import ThrowawayServer, launched
from tests.chaos.waiting import wait_until
from tests.processes import Daemon, sagad

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MAX_CONNECTIONS = 8


@pytest.fixture
def tight_server() -> Iterator[ThrowawayServer]:
    with launched(max_connections=str(MAX_CONNECTIONS), superuser_reserved_connections="0") as server:
        yield server


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

        # One daemon at a time: two would race for the one slot, and the loser could not ask either.
        waiting = fleet.start(tight_url, "waits", "--max-connections", "4")
        await wait_until(partial(_said, waiting, "too many clients"), seconds=20)
        stopped = fleet.start(tight_url, "stopped-while-waiting", "--max-connections", "4")
        await wait_until(partial(_said, stopped, "too many clients"), seconds=20)
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
    assert await waiting.stop() == 0


async def _said(daemon: Daemon, words: str) -> bool:
    return words in daemon.log.read_text()


async def _crowd(url: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(asyncpg_dsn(url), server_settings={"application_name": "crowd"})
    return conn


async def test_a_connection_replaced_on_a_full_server_says_why_in_one_line(tight_url: str) -> None:
    budget = ConnectionBudget.split(4)
    db = await Database.connect(tight_url, limits=SessionLimits.for_lease(30.0), budget=budget)
    crowd: list[asyncpg.Connection] = []
    try:
        while True:  # every connection the server has left
            try:
                crowd.append(await _crowd(tight_url))
            except asyncpg.TooManyConnectionsError:
                break
        ended = await crowd[0].fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name <> 'crowd' AND backend_type = 'client backend'"
        )
        assert ended == budget.work + budget.priority
        with anyio.fail_after(10):  # the slots they freed taken at once, before the pool can open others
            while len(crowd) < MAX_CONNECTIONS:
                try:
                    crowd.append(await _crowd(tight_url))
                except asyncpg.TooManyConnectionsError:
                    await anyio.sleep(0.01)
        errors: list[str] = []
        for _ in range(budget.work + 1):  # past the connections that were ended, to one that cannot be opened
            try:
                await db.fetch("SELECT 1", operation=Operation.CLAIM)
            except TooManyClients as error:
                errors.append(str(error))
                break
            except DatabaseUnreachable:
                continue
        assert errors, "no connection had to be replaced"
        assert f"its max_connections is {MAX_CONNECTIONS}" in errors[0]
        assert "--max-connections 4" in errors[0] and "\n" not in errors[0]
    finally:
        for conn in crowd:
            await conn.close()
        await db.close()
