"""The plan probe: the daemon's statements on a filled database, reported as they ran, changing nothing."""

from __future__ import annotations

import pytest

from bench.fill import fill
from bench.plans import explain
from sagad.domain.steps import Step
from sagad.store.db import Database
from sagad.store.runs import RunStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_the_claim_and_the_step_commits_read_no_table_whole_and_leave_nothing_behind(
    database_url: str, db: Database, generic: bool
) -> None:
    await fill(database_url, 2_000)

    plans = await explain(database_url, 40, generic=generic, audit=False)

    doing = {plan.doing for plan in plans}
    assert {"submit", "claim", *(f"commit {step}" for step in Step)} <= doing
    assert any(name.startswith("compensate") for name in doing)
    assert any(name.endswith(" again") for name in doing)
    hot = [plan for plan in plans if plan.doing == "claim" or plan.doing.startswith(("commit ", "compensate "))]
    assert all("Buffers:" in plan.report for plan in hot)
    assert [(plan.doing, plan.scans()) for plan in hot if plan.scans()] == []
    # Each run looked up by its key: no batch scanned once per run of another (40 x 40 comparisons).
    assert [(plan.doing, plan.joined_in_vain()) for plan in hot if plan.joined_in_vain() >= 40] == []
    assert await RunStore(db).count_by_status() == {"completed": 1_800, "compensated": 200}
