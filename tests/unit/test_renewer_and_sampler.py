"""The renewer drops runs another daemon took over; the sampler exports counts and re-plans grown tables."""

from __future__ import annotations

import anyio
import pytest

from sagad.actors.renewer import RENEWAL_CHUNK, Renewer
from sagad.actors.sampler import REPLAN_FROM, StatusSampler
from sagad.domain.runs import RunStatus
from sagad.errors import DatabaseUnreachable
from tests.unit.fakes import DEADLINE, ME, FakePlans, Scene, hold

pytestmark = pytest.mark.anyio


async def test_a_renewal_keeps_held_runs_and_drops_the_ones_taken_over() -> None:
    scene = Scene()
    for n in range(3):
        scene.store.submit({"n": n})
    kept, taken, finished = await hold(scene.store, scene.ledger)
    scene.store.take_over(taken.lease.run_id)
    scene.store.runs[finished.lease.run_id].status = RunStatus.COMPLETED  # finished under this lease
    scene.store.runs[finished.lease.run_id].claimed_by = None
    renewer = Renewer(store=scene.store, ledger=scene.ledger, metrics=scene.metrics, worker=ME, lease_seconds=30.0)

    await renewer.renew_once()

    assert scene.ledger.holds(kept.lease)
    assert not scene.ledger.holds(taken.lease)
    assert scene.ledger.holds(finished.lease)  # not renewed, yet not lost: its step actor lets it go
    assert scene.sample("sagad_lease_renewals_total", result="renewed") == 1
    assert scene.sample("sagad_lease_renewals_total", result="lost") == 1
    assert scene.sample("sagad_leases_lost_total", found_by="renewal") == 1


async def test_thousands_of_leases_are_renewed_a_chunk_a_statement_and_a_failed_chunk_spares_the_others() -> None:
    scene = Scene()
    for n in range(2 * RENEWAL_CHUNK + 10):
        scene.store.submit({"n": n})
    held = await hold(scene.store, scene.ledger, limit=3 * RENEWAL_CHUNK)
    first_chunk = [run.lease.run_id for run in held[:RENEWAL_CHUNK]]
    scene.store.fail("renew", DatabaseUnreachable, runs=first_chunk)
    renewer = Renewer(store=scene.store, ledger=scene.ledger, metrics=scene.metrics, worker=ME, lease_seconds=30.0)

    with pytest.raises(DatabaseUnreachable):
        await renewer.renew_once()

    assert scene.sample("sagad_lease_renewals_total", result="renewed") == RENEWAL_CHUNK + 10
    assert all(scene.ledger.holds(run.lease) for run in held)
    await renewer.renew_once()  # the next try renews them all, a chunk a statement
    assert scene.sample("sagad_lease_renewals_total", result="renewed") == RENEWAL_CHUNK + 10 + len(held)


async def test_the_sampler_exports_runs_by_status_and_replans_once_the_tables_have_grown() -> None:
    scene = Scene()
    for _ in range(REPLAN_FROM):
        scene.store.submit()
    plans = FakePlans()
    sampler = StatusSampler(store=scene.store, plans=plans, metrics=scene.metrics, every_seconds=0.001)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            await plans.refreshed_once.wait()
            tg.cancel_scope.cancel()
    assert plans.refreshed == 1
    assert scene.sample("sagad_runs_by_status", status="pending") == REPLAN_FROM
    assert scene.sample("sagad_runs_overdue") == 0
