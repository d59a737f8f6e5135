"""Daemons through PgBouncer in transaction mode: no session survives a transaction, and every guarantee holds."""

from __future__ import annotations

import json
import signal
import uuid
from functools import partial

import anyio
import pytest

from bench.bouncer import PgBouncer
from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.errors import TransientDatabaseError
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import assert_audit_clean, assert_ended_as_built, held_by, report, submit_mix
from tests.chaos.server import ThrowawayServer
from tests.chaos.waiting import wait_until
from tests.chaos.write_log import install_write_log, writes_not_by_holder
from tests.processes import REPO, sagad

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

OPTIONS = ("--lease-seconds", "2", "--max-inflight", "100", "--batch-limit", "20")


async def test_every_command_works_with_only_a_pooled_url(
    pooled_url: str, throwaway_database_url: str, fleet: Fleet
) -> None:
    brief = str(REPO / "examples" / "brief.json")
    submitted = await anyio.to_thread.run_sync(partial(sagad, "submit", brief, "--database-url", pooled_url))
    assert submitted.returncode == 0, submitted.stderr
    first = RunId(uuid.UUID(submitted.stdout.strip()))
    daemons = [fleet.start(pooled_url, f"pooled-{n}", *OPTIONS) for n in range(2)]
    for daemon in daemons:
        await daemon.ready()
    assert "through a pooler in transaction mode" in daemons[0].log.read_text()
    assert "polling" in daemons[0].log.read_text()
    db = await Database.connect(pooled_url, max_size=2)
    try:
        assert db.pooled
        outcomes = {first: Ending.COMPLETED} | await submit_mix(RunStore(db), 300)
        await assert_ended_as_built(db, pooled_url, outcomes, seconds=60)
        status = await anyio.to_thread.run_sync(partial(sagad, "status", str(first), "--database-url", pooled_url))
        assert json.loads(status.stdout)["status"] == "completed", status.stderr
    finally:
        await db.close()
    for daemon in daemons:
        await daemon.endpoint_url()
        daemon.signal(signal.SIGTERM)
    assert [await daemon.wait() for daemon in daemons] == [0, 0]


async def test_a_killed_daemon_behind_a_pooler_has_its_runs_finished_once_its_leases_end(
    pooled_url: str, fleet: Fleet
) -> None:
    victim = fleet.start(pooled_url, "victim", *OPTIONS)
    await victim.ready()
    db = await Database.connect(pooled_url, max_size=2)
    try:
        outcomes = await submit_mix(RunStore(db), 200)
        await wait_until(partial(_holds, db, "victim"), seconds=20)
        victim.signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        held = len(await held_by(db, "victim"))
        survivor = fleet.start(pooled_url, "survivor", *OPTIONS)
        await survivor.ready()
        await assert_ended_as_built(db, pooled_url, outcomes, seconds=60)
        assert await survivor.stop() == 0
    finally:
        await db.close()
    report("SIGKILL behind a pooler", runs=len(outcomes), held_by_the_killed_daemon=held)


async def _holds(db: Database, worker: str) -> bool:
    return len(await held_by(db, worker)) > 0


async def test_pgbouncer_restarted_under_load_loses_and_doubles_nothing(
    pooled_url: str, bouncer: PgBouncer, throwaway_database_url: str, fleet: Fleet
) -> None:
    daemons = [
        fleet.start(pooled_url, f"direct-{n}", *OPTIONS, "--direct-url", throwaway_database_url) for n in range(2)
    ]
    for daemon in daemons:
        await daemon.ready()
    assert "LISTEN, worker lock" in daemons[0].log.read_text()
    db = await Database.connect(throwaway_database_url, max_size=2)  # the test's own, past the pooler
    try:
        outcomes: dict[RunId, Ending] = {}
        for wave in range(3):
            outcomes |= await submit_mix(RunStore(db), 150, first_seed=wave * 150)
            await anyio.sleep(0.2)
            bouncer.kill()
            await anyio.sleep(0.5)
            bouncer.start()
        await assert_ended_as_built(db, throwaway_database_url, outcomes, seconds=90)
        await assert_audit_clean(pooled_url)
        # The restarts cut the daemons' pooled connections while they worked, not while they idled.
        assert any("lost the database" in daemon.log.read_text() for daemon in daemons)
    finally:
        await db.close()
    for daemon in daemons:
        await daemon.endpoint_url()
        daemon.signal(signal.SIGTERM)
    assert [await daemon.wait() for daemon in daemons] == [0, 0]


async def test_a_daemon_frozen_past_its_lease_behind_a_pooler_writes_nothing_once_it_wakes(
    pooled_url: str, throwaway_database_url: str, fleet: Fleet
) -> None:
    db = await Database.connect(throwaway_database_url, max_size=2)
    try:
        await install_write_log(db)
        frozen = fleet.start(pooled_url, "frozen", *OPTIONS)
        peer = fleet.start(pooled_url, "peer", *OPTIONS)
        for daemon in (frozen, peer):
            await daemon.ready()
        outcomes = await submit_mix(RunStore(db), 200)
        await wait_until(partial(_holds, db, "frozen"), seconds=20)
        frozen.signal(signal.SIGSTOP)
        held = len(await held_by(db, "frozen"))
        await anyio.sleep(3.0)  # past the 2 s lease: the peer takes the frozen daemon's runs over
        frozen.signal(signal.SIGCONT)
        await assert_ended_as_built(db, throwaway_database_url, outcomes, seconds=60)
        assert await writes_not_by_holder(db) == []
        for daemon in (frozen, peer):
            await daemon.endpoint_url()
            daemon.signal(signal.SIGTERM)
        assert [await daemon.wait() for daemon in (frozen, peer)] == [0, 0]
    finally:
        await db.close()
    report("frozen past the lease behind a pooler", runs=len(outcomes), held_when_frozen=held)


async def test_postgresql_restarted_behind_the_pooler_under_load_loses_and_doubles_nothing(
    pooled_url: str, throwaway_server: ThrowawayServer, throwaway_database_url: str, fleet: Fleet
) -> None:
    db = await Database.connect(throwaway_database_url, max_size=2)
    try:
        await install_write_log(db)
        daemons = [fleet.start(pooled_url, f"behind-{n}", *OPTIONS) for n in range(2)]
        for daemon in daemons:
            await daemon.ready()
        outcomes: dict[RunId, Ending] = {}
        for wave in range(2):
            outcomes |= await submit_mix(RunStore(db), 150, first_seed=wave * 150)
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(throwaway_server.stop)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(throwaway_server.start)
            await wait_until(partial(_answers, db), seconds=20)  # the test's own pool reconnected too
        await assert_ended_as_built(db, throwaway_database_url, outcomes, seconds=90)
        assert await writes_not_by_holder(db) == []
        for daemon in daemons:
            await daemon.endpoint_url()
            daemon.signal(signal.SIGTERM)
        assert [await daemon.wait() for daemon in daemons] == [0, 0]
    finally:
        await db.close()


async def _answers(db: Database) -> bool:
    try:
        await db.fetch("SELECT 1")
    except TransientDatabaseError:
        return False
    return True


async def test_a_daemon_told_there_is_no_pooler_names_the_feature_refused_and_the_option(pooled_url: str) -> None:
    done = await anyio.to_thread.run_sync(
        partial(sagad, "run", "--pooler", "none", "--database-url", pooled_url, "--metrics-addr", "127.0.0.1:0")
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "refused session settings at connect" in line and "--pooler transaction" in line, line
