"""What sagad does differently behind a pooler in transaction mode: limits per transaction, refusals named."""

from __future__ import annotations

import asyncpg
import pytest

from sagad.domain.db_operations import Operation
from sagad.store.limits import SessionLimits
from sagad.store.pooler import ServerFacts, TransactionLimits, _milliseconds, pooler_refusal, role_settings

LIMITS = SessionLimits.for_lease(30.0)  # statement 15 s, renewals 3.75 s, idle in transaction 5 s


@pytest.mark.parametrize(
    ("shown", "ms"), [("0", 0), ("500ms", 500), ("15s", 15_000), ("2min", 120_000), ("1h", 3_600_000), ("7", 7)]
)
def test_time_settings_are_read_as_show_prints_them(shown: str, ms: int) -> None:
    assert _milliseconds(shown) == ms


def test_without_role_settings_each_transaction_sets_its_operations_limits() -> None:
    limits = TransactionLimits(LIMITS, ServerFacts(pooled=True, max_connections=100, server_version=15))
    assert limits.statement(Operation.COMMIT) == (
        "BEGIN; SET LOCAL statement_timeout = 15000; SET LOCAL idle_in_transaction_session_timeout = 5000"
    )
    assert "statement_timeout = 3750;" in (limits.statement(Operation.RENEWAL) or "")


def test_from_postgresql_17_a_transaction_also_gets_its_transaction_timeout() -> None:
    limits = TransactionLimits(LIMITS, ServerFacts(pooled=True, max_connections=100, server_version=17))
    assert (limits.statement(Operation.CLAIM) or "").endswith("SET LOCAL transaction_timeout = 20000")


def test_role_settings_as_strict_as_the_limits_spare_the_set_locals_but_not_where_they_are_looser() -> None:
    facts = ServerFacts(pooled=True, max_connections=100, statement_timeout_ms=15_000, idle_timeout_ms=5_000)
    limits = TransactionLimits(LIMITS, facts)
    assert limits.statement(Operation.COMMIT) is None
    assert limits.statement(Operation.RENEWAL) is not None  # renewals are held to 3.75 s, the role to 15
    assert "statement_timeout = 15000" in role_settings(LIMITS)
    looser = TransactionLimits(LIMITS, ServerFacts(pooled=True, max_connections=100, statement_timeout_ms=60_000))
    assert looser.statement(Operation.COMMIT) is not None


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" already exists'),
        asyncpg.exceptions.InvalidSQLStatementNameError('prepared statement "__asyncpg_stmt_9__" does not exist'),
        asyncpg.ProtocolViolationError("unsupported startup parameter: statement_timeout"),
    ],
)
def test_a_poolers_refusal_is_named_with_the_option_that_avoids_it(error: Exception) -> None:
    line = pooler_refusal(error)
    assert line is not None
    assert "--pooler transaction" in line
    assert "\n" not in line


def test_other_errors_are_no_refusal_of_a_pooler() -> None:
    assert pooler_refusal(asyncpg.ProtocolViolationError("something else")) is None
    assert pooler_refusal(ValueError("unsupported startup parameter")) is None
