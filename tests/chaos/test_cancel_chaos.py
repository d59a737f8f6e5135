"""Cancels at random moments while a daemon is killed or frozen mid-call: every run ends whole, one way.

Two daemons on a server of the test's own, slow calls at every step; each round a wave of runs is
submitted, a random third of it cancelled at a random moment, and meanwhile one daemon is killed
(SIGKILL, then started again under a new name), frozen (SIGSTOP past its lease, then thawed) or left
alone. A cancel acknowledged ends compensated with no row left, or, when it raced the run's last step,
completed whole; a refused one was completed; every other run ends as its brief was built; no row is
lost, orphaned or doubled, and the audit is clean.
"""

from __future__ import annotations

import random
import signal

import anyio
import pytest

from sagad import CancelOutcome, Client
from sagad.content.samples import Ending
from sagad.domain.runs import RunId
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.fleet import Fleet
from tests.chaos.invariants import RowAccount, account_rows, assert_audit_clean, report, submit_mix
from tests.helpers import rows_of, wait_terminal

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(400)]

ROUNDS = 12
WAVE = 30
LEASE = 1.0
OPTIONS = (
    "--lease-seconds", str(LEASE), "--max-inflight", "60", "--batch-limit", "10", "--max-attempts", "1000",
    "--simulate-latency", "30:150",
)  # fmt: skip
ACCEPTED = (CancelOutcome.COMPENSATED, CancelOutcome.REQUESTED, CancelOutcome.ALREADY_REQUESTED)


async def test_cancels_amid_kills_and_freezes_end_every_run_whole(throwaway_database_url: str, fleet: Fleet) -> None:
    url = throwaway_database_url
    db = await Database.connect(url, max_size=4)
    try:
        runs = RunStore(db)
        victim = fleet.start(url, "victim-0", *OPTIONS)
        peer = fleet.start(url, "peer", *OPTIONS)
        await victim.metrics_url()
        await peer.metrics_url()
        chance = random.Random(17)
        outcomes: dict[RunId, Ending] = {}
        answers: dict[RunId, CancelOutcome] = {}
        faults = {"kill": 0, "freeze": 0, "none": 0}
        async with Client(url) as client:
            for round_ in range(ROUNDS):
                wave = await submit_mix(runs, WAVE, first_seed=round_ * WAVE)
                outcomes |= wave
                await anyio.sleep(chance.uniform(0.0, 0.4))
                fault = chance.choice(tuple(faults))
                faults[fault] += 1
                if fault == "kill":
                    victim.signal(signal.SIGKILL)
                elif fault == "freeze":
                    victim.signal(signal.SIGSTOP)
                for result in await client.cancel(chance.sample(list(wave), WAVE // 3), f"chaos {round_}"):
                    answers[result.run_id] = result.outcome
                if fault == "kill":
                    await victim.wait()
                    victim = fleet.start(url, f"victim-{round_ + 1}", *OPTIONS)
                    await victim.metrics_url()
                elif fault == "freeze":
                    await anyio.sleep(LEASE * 1.5)  # its leases run out; the peer claims what it held
                    victim.signal(signal.SIGCONT)
        ended = await wait_terminal(db, outcomes, seconds=120)
        raced = await _check_cancels(db, answers, ended, outcomes)
        assert await account_rows(db) == RowAccount(lost=0, orphaned=0, duplicated=0)
        await assert_audit_clean(url)
        accepted = sum(outcome in ACCEPTED for outcome in answers.values())
        assert accepted > raced, "no cancel took effect"
        report("cancels amid kills and freezes", rounds=ROUNDS, faults=faults, cancels=len(answers),
               accepted=accepted, raced_and_completed=raced)  # fmt: skip
    finally:
        await db.close()


async def _check_cancels(
    db: Database, answers: dict[RunId, CancelOutcome], ended: dict[RunId, str], outcomes: dict[RunId, Ending]
) -> int:
    """Each run ended as its cancel's answer allows; how many accepted cancels lost the race to the last step."""
    raced = 0
    for run_id, outcome in answers.items():
        status = ended[run_id]
        if outcome in ACCEPTED:
            if status == "completed":
                raced += 1  # the cancel lost the race with the run's last step: the run is whole
            else:
                assert status == "compensated", (run_id, outcome, status)
                assert set((await rows_of(db, run_id)).values()) == {0}
        elif outcome is CancelOutcome.REFUSED_COMPLETED:
            assert status == "completed"
        else:  # it had failed on its own before the cancel came
            assert status == "compensated" and outcomes[run_id] is not Ending.COMPLETED
    for run_id, built in outcomes.items():
        if run_id not in answers:
            assert ended[run_id] == ("completed" if built is Ending.COMPLETED else "compensated"), run_id
    return raced
