"""How a daemon's connection budget is shared."""

from __future__ import annotations

import pytest

from sagad.store.budget import DEFAULT_CONNECTIONS, MIN_CONNECTIONS, ConnectionBudget

# (total, priority, lock, listen, work, commits in flight per step): the README's table.
TABLE = [
    (3, 1, False, False, 2, 1),
    (4, 1, True, False, 2, 1),
    (5, 1, True, False, 3, 1),
    (6, 1, True, True, 3, 1),
    (10, 1, True, True, 7, 3),
    (26, 2, True, True, 22, 3),
]


@pytest.mark.parametrize(("total", "priority", "lock", "listen", "work", "commits"), TABLE)
def test_a_budget_is_shared_as_the_readme_says(
    total: int, priority: int, lock: bool, listen: bool, work: int, commits: int
) -> None:
    budget = ConnectionBudget.split(total)
    assert (budget.priority, budget.lock, budget.listen, budget.work) == (priority, lock, listen, work)
    assert budget.commits_in_flight == commits


@pytest.mark.parametrize("total", range(MIN_CONNECTIONS, 60))
def test_every_budget_is_spent_exactly_and_keeps_a_priority_connection_and_two_for_work(total: int) -> None:
    for budget in (ConnectionBudget.split(total), ConnectionBudget.split(total, sessions=False)):
        assert budget.priority + budget.lock + budget.listen + budget.work == total
        assert budget.priority >= 1
        assert budget.work >= 2
    pooled = ConnectionBudget.split(total).without_sessions()
    assert (pooled.lock, pooled.listen, pooled.total) == (False, False, total)
    assert pooled.work + pooled.priority == total


def test_the_default_fits_eight_daemons_and_some_operators_in_a_default_server() -> None:
    max_connections, reserved_for_superusers, operators = 100, 3, 5
    assert 8 * DEFAULT_CONNECTIONS + operators <= max_connections - reserved_for_superusers


def test_a_budget_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        ConnectionBudget.split(MIN_CONNECTIONS - 1)
