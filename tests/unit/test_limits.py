"""The session limits derived from a lease, and the bound they give."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sagad.domain.db_operations import Operation
from sagad.metrics import DB_OPERATIONS, Metrics
from sagad.store.limits import RENEWAL, SessionLimits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("lease", [0.5, 1.0, 2.0, 6.0, 30.0, 3600.0])
def test_a_lost_daemon_holds_no_lock_past_the_leases_it_renewed(lease: float) -> None:
    limits = SessionLimits.for_lease(lease)
    # Renewals start every L/3: the last one before a daemon stops answering started at most L/3 earlier,
    # so its leases end no sooner than 2L/3 after. By then the statement in flight has ended (L/2) and a
    # transaction it left open was ended after L/6 idle.
    assert limits.statement + limits.idle_in_transaction <= 2 * lease / 3 + 1e-9
    # A result nobody reads: the socket gives up after max(L/6, 1 s); past the lease only under 6 s leases.
    assert limits.statement + limits.unacknowledged <= 2 * lease / 3 + max(0.0, 1.0 - lease / 6) + 1e-9
    # The daemon waits for an answer longer than the server lets a statement run: a cancel comes first.
    assert limits.answer > limits.statement
    assert limits.renewal_answer > limits.renewal_statement
    # A renewal gives up in time for another one before the leases end.
    assert limits.renewal_answer <= lease / 6
    assert limits.answer_seconds(RENEWAL) == limits.renewal_answer
    assert limits.keepalive_idle >= 1
    assert limits.keepalive_interval >= 1


def test_every_operation_has_a_series_of_sagad_db_timeouts_total() -> None:
    assert set(DB_OPERATIONS) == {operation.value for operation in Operation}
    [metric] = Metrics().db_timeouts.collect()
    samples = {s.labels["operation"] for s in metric.samples if s.name.endswith("_total")}
    assert samples == set(DB_OPERATIONS)


def test_the_store_names_operations_by_the_enum_never_by_a_string() -> None:
    for module in (ROOT / "store").glob("*.py"):
        text = module.read_text()
        assert not re.findall(r'operation="\w*"|(?:dedicated|bounded\(\w+,)\s*\(?"\w*"', text), module.name
