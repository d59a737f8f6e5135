"""What stands behind a database URL: the server itself, or a pooler in transaction mode (PgBouncer).

Through a pooler in transaction mode each transaction may run on another server session, so nothing
of a session outlives a transaction: settings sent at connect are refused, prepared statements are
lost or collide, LISTEN hears nothing and a session advisory lock is released at random. sagad
then connects without settings and with asyncpg's statement cache off (each statement is prepared
unnamed, one more round trip), sets its limits per transaction (or finds them on the role), and
does without LISTEN and the worker lock unless a direct URL gives it a session for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from sagad.domain.db_operations import Operation
from sagad.errors import DatabaseUnreachable
from sagad.store.limits import SessionLimits, ms

_TRANSACTION_TIMEOUT_FROM = 17  # the first PostgreSQL with transaction_timeout; older ones refuse the name


class Pooler(StrEnum):
    """How to treat the URL: find out (``auto``), a pooler in transaction mode, or a server's own sessions."""

    AUTO = "auto"
    TRANSACTION = "transaction"
    NONE = "none"


# A pooler hands its client a key of its own for cancel requests: the pid in it is not the server's.
_FACTS = """
    SELECT pg_backend_pid() AS pid, current_setting('max_connections')::int AS max_connections,
           current_setting('statement_timeout') AS statement_timeout,
           current_setting('idle_in_transaction_session_timeout') AS idle_timeout
"""


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a first connection found behind the URL."""

    pooled: bool
    max_connections: int | None
    statement_timeout_ms: int = 0
    """The role's (or database's) default, 0 when none: what a pooled session starts with."""
    idle_timeout_ms: int = 0
    server_version: int = 0


async def probe(dsn: str, answer_seconds: float | None) -> ServerFacts:
    """Connect once, as a pooled connection would (no settings, no named statements), and look."""
    seconds = answer_seconds or 60
    conn = await asyncpg.connect(dsn, timeout=seconds, statement_cache_size=0)
    try:
        row = await conn.fetchrow(_FACTS, timeout=seconds)
    finally:
        try:
            await conn.close(timeout=1)
        except Exception:
            conn.terminate()
    if row is None:  # a query of constants always answers one row; a pooler that loses it is broken
        raise DatabaseUnreachable("the server answered nothing to a query of its settings")
    return ServerFacts(
        pooled=row["pid"] != conn.get_server_pid(),
        max_connections=row["max_connections"],
        statement_timeout_ms=_milliseconds(row["statement_timeout"]),
        idle_timeout_ms=_milliseconds(row["idle_timeout"]),
        server_version=conn.get_server_version().major,
    )


def _milliseconds(setting: str) -> int:
    """A time setting as SHOW prints it (``0``, ``500ms``, ``15s``, ``2min``, ``1h``) in milliseconds."""
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    number = setting.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(number) * units.get(setting[len(number) :], 1)


@dataclass(frozen=True, slots=True)
class TransactionLimits:
    """The limits a pooled session cannot take at connect, set per transaction unless the role has them."""

    limits: SessionLimits
    facts: ServerFacts

    def statement(self, operation: Operation) -> str | None:
        """``BEGIN`` and the ``SET LOCAL``s for ``operation``'s work; None when the role's own limits hold."""
        statement = self.limits.renewal_statement if operation is Operation.RENEWAL else self.limits.statement
        settings = {
            "statement_timeout": statement,
            "idle_in_transaction_session_timeout": self.limits.idle_in_transaction,
        }
        if self.facts.server_version >= _TRANSACTION_TIMEOUT_FROM:
            settings["transaction_timeout"] = self.limits.transaction
        if self.role_holds(statement):
            return None
        sets = "; ".join(f"SET LOCAL {name} = {ms(seconds)}" for name, seconds in settings.items())
        return f"BEGIN; {sets}"

    def role_holds(self, statement_seconds: float) -> bool:
        """Whether the role's settings are at least as strict as the limits (then no SET LOCAL is needed)."""
        facts = self.facts
        return (
            0 < facts.statement_timeout_ms <= statement_seconds * 1000
            and 0 < facts.idle_timeout_ms <= self.limits.idle_in_transaction * 1000
        )


def role_settings(limits: SessionLimits) -> str:
    """The ``ALTER ROLE`` that spares a pooled daemon the per-transaction SET LOCALs (a round trip each)."""
    return (
        f"ALTER ROLE <role> SET statement_timeout = {ms(limits.statement)}; "
        f"ALTER ROLE <role> SET idle_in_transaction_session_timeout = {ms(limits.idle_in_transaction)}"
    )


# What a pooler in transaction mode says when sagad uses a session feature it does not carry.
_REFUSALS = {
    asyncpg.exceptions.DuplicatePreparedStatementError: "prepared statements",
    asyncpg.exceptions.InvalidSQLStatementNameError: "prepared statements",
}


def pooler_refusal(exc: BaseException) -> str | None:
    """One line naming the feature a pooler refused and the option that avoids it; None for other errors."""
    feature = next((name for kind, name in _REFUSALS.items() if isinstance(exc, kind)), None)
    if feature is None and isinstance(exc, asyncpg.ProtocolViolationError) and "startup parameter" in str(exc):
        feature = "session settings at connect"
    if feature is None:
        return None
    return (
        f"a pooler in transaction mode refused {feature} ({exc}): run with --pooler transaction "
        "(or auto, the default), and --direct-url for LISTEN and the worker lock"
    )
