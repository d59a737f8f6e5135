"""Every lost lease is counted once, by whatever found it first."""

from __future__ import annotations

import uuid

from sagad.actors.ledger import Ledger
from sagad.domain.runs import Lease, LeaseToken, RunId
from sagad.metrics import Metrics


def _lease(token: int = 1) -> Lease:
    return Lease(RunId(uuid.uuid4()), LeaseToken(token))


def _lost(metrics: Metrics) -> dict[str, float | None]:
    found_by = ("renewal", "step", "compensation")
    return {f: metrics.registry.get_sample_value("sagad_leases_lost_total", {"found_by": f}) for f in found_by}


def test_a_lease_found_lost_is_dropped_and_counted_once_by_its_finder() -> None:
    metrics = Metrics()
    ledger = Ledger(10, metrics)
    taken, kept = _lease(), _lease()
    ledger.hold(taken)
    ledger.hold(kept)

    ledger.lose([taken], "step")
    ledger.lose([taken], "renewal")  # the renewer finds it too, later: already counted

    assert ledger.snapshot() == [kept]
    assert _lost(metrics) == {"renewal": 0, "step": 1, "compensation": 0}


def test_a_lease_no_longer_held_or_of_an_older_claim_is_not_counted() -> None:
    metrics = Metrics()
    ledger = Ledger(10, metrics)
    current = _lease(2)
    ledger.hold(current)
    older = Lease(current.run_id, LeaseToken(1))

    ledger.lose([older, _lease()], "compensation")

    assert ledger.snapshot() == [current]
    assert _lost(metrics) == {"renewal": 0, "step": 0, "compensation": 0}
