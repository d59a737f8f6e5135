"""Daemons killed and frozen while slow calls are in flight, and the delivery endpoint restarted: nothing
lost, nothing written twice, every completed run's package accepted exactly once, no compensated run's."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from sagad.content.delivery import idempotency_key
from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import RunId
from sagad.loadtest.journal import read_journal
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet, sample
from tests.chaos.invariants import MIX, assert_ended_as_built, held_by, report
from tests.chaos.write_log import install_write_log, writes_not_by_holder
from tests.receiver import ReceiverProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUNS = 400
ROUNDS = 6
LEASE = ("--lease-seconds", "2")


def options(receiver: ReceiverProcess) -> tuple[str, ...]:
    # Every call waits like a service (lognormal, median 80 ms, p99 400 ms); many are in flight at once.
    return (
        *LEASE,
        "--simulate-latency",
        "80:400",
        "--delivery-hosts",
        f"127.0.0.1:{receiver.port}",
        "--max-inflight",
        "200",
        "--max-attempts",
        "100",
    )


async def submit_to(runs: RunStore, url: str, count: int) -> dict[RunId, Ending]:
    endings = [MIX[seed % len(MIX)] for seed in range(count)]
    briefs: list[tuple[Any, str | None]] = []
    for seed, ending in enumerate(endings):
        brief = sample_brief(ending, seed)
        brief["delivery"] = {**brief["delivery"], "destination": url}
        briefs.append((brief, None))
    submitted = await runs.submit_many(briefs)
    return {run_id: ending for (run_id, _), ending in zip(submitted, endings, strict=True)}


async def test_kills_freezes_and_a_restarted_endpoint_deliver_every_package_once_and_lose_nothing(
    database_url: str, db: Database, runs: RunStore, fleet: Fleet, tmp_path: Path
) -> None:
    await install_write_log(db)
    chance = random.Random(9)
    async with ReceiverProcess(tmp_path / "journal.jsonl", "--latency-median-ms", "10", "--fail-5xx", "0.1") as cms:
        killed, frozen = (
            fleet.start(database_url, "killed-0", *options(cms)),
            fleet.start(database_url, "frozen", *options(cms)),
        )
        await killed.ready()
        await frozen.ready()
        endings = await submit_to(runs, f"{cms.url}/packages", RUNS)
        in_flight_at_kills = held_at_kills = 0
        with anyio.fail_after(120):
            for round_ in range(ROUNDS):
                await anyio.sleep(chance.uniform(0.5, 1.0))
                in_flight_at_kills += int(await sample(killed, "sagad_step_calls_in_flight"))
                held_at_kills += len(await held_by(db, killed.worker))
                killed.signal(signal.SIGKILL)
                await killed.wait()
                killed = fleet.start(database_url, f"killed-{round_ + 1}", *options(cms))
                if round_ % 2 == 0:  # frozen past its lease with calls in flight, then woken
                    frozen.signal(signal.SIGSTOP)
                    await anyio.sleep(2.5)
                    frozen.signal(signal.SIGCONT)
                if round_ == ROUNDS // 2:  # the endpoint dies mid-load and comes back on its port
                    await cms.restart(signal.SIGKILL)
            account = await assert_ended_as_built(db, database_url, endings, seconds=90)
        assert await writes_not_by_holder(db) == []
        statuses = {
            row["id"]: row["status"]
            for row in await db.fetch("SELECT id, status FROM workflow_runs WHERE id = ANY($1::uuid[])", list(endings))
        }
        for daemon in (killed, frozen):
            assert await daemon.stop() == 0
    journal = read_journal(tmp_path / "journal.jsonl")
    completed = {idempotency_key(run) for run, status in statuses.items() if status == "completed"}
    compensated = {idempotency_key(run) for run, status in statuses.items() if status == "compensated"}
    assert {key: n for key, n in journal.accepted.items() if key in completed} == dict.fromkeys(completed, 1)
    assert set(journal.accepted) - set(journal.retracted) == completed, "a compensated run's package is delivered"
    assert in_flight_at_kills > 0, "no kill hit calls in flight"
    report(
        "calls in flight",
        runs_pushed=len(endings),
        kills=ROUNDS,
        freezes=(ROUNDS + 1) // 2,
        endpoint_restarts=1,
        calls_in_flight_at_kills=in_flight_at_kills,
        runs_held_at_kills=held_at_kills,
        packages_accepted=len(completed),
        packages_recognised_again=sum(journal.recognised.values()),
        compensated_packages_retracted=len(set(journal.retracted) & compensated),
        rows_lost=account.lost,
        rows_orphaned=account.orphaned,
        rows_duplicated=account.duplicated,
    )
