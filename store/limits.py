"""How long the server lets a daemon's session hold anything, and how long the daemon waits for an answer.

A daemon can stop answering at any moment: frozen (SIGSTOP, a VM pause, a long GC), cut off from the
network, or dead. Whatever it was doing, the server must end it on its own, so that no row lock it
holds outlives the lease the lock is for. Every limit is therefore a fraction of the lease ``L``:

- ``statement_timeout`` L/2: a statement that waits on a lock or on a slow server is cancelled;
- ``idle_in_transaction_session_timeout`` L/6: a transaction left open (its daemon frozen between two
  statements) is rolled back and its session ended;
- ``tcp_user_timeout`` max(L/6, 1 s): a session blocked sending a result nobody reads is ended;
- TCP keepalives (idle max(1, L/3) s, then 3 probes max(1, L/12) s apart): an idle session whose client
  vanished is ended, which also frees its worker lock (``store/liveness.py``);
- ``transaction_timeout`` 2L/3 (PostgreSQL 17 and later): a transaction, whatever it waits on, ends.

Before PostgreSQL 17 one case escapes the first two: a client frozen inside a transaction between the
two halves of a statement (the driver sends Parse/Describe/Flush, reads the answer, then Bind/Execute/
Sync). The session is then "active", reading from its client, where PostgreSQL ignores statement_timeout
and idle_in_transaction_session_timeout does not apply. Peers end such sessions (``store/liveness.py``).

On its side, the daemon abandons a statement that has no answer after L/2 + L/6 (the server's cancel
would have come first), and a renewal after L/6: it terminates the connection and never reuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sagad.domain.db_operations import Operation

RENEWAL = Operation.RENEWAL
"""The operation whose statements run under the renewal's shorter limits."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Server-side limits of every session of a daemon, and its own deadlines, in seconds."""

    statement: float
    renewal_statement: float
    idle_in_transaction: float
    unacknowledged: float
    keepalive_idle: int
    keepalive_interval: int
    keepalive_count: int
    answer: float
    """How long a statement may go unanswered before the daemon abandons its connection."""
    renewal_answer: float
    transaction: float
    """PostgreSQL 17 and later: no transaction lives longer, whatever it waits on."""

    @classmethod
    def for_lease(cls, lease_seconds: float) -> SessionLimits:
        lease = lease_seconds
        return cls(
            statement=lease / 2,
            renewal_statement=lease / 8,
            idle_in_transaction=lease / 6,
            unacknowledged=max(lease / 6, 1.0),  # under a second, one lost packet (RTO 200 ms+) would end sessions
            keepalive_idle=max(1, round(lease / 3)),
            keepalive_interval=max(1, round(lease / 12)),
            keepalive_count=3,
            answer=lease / 2 + lease / 6,
            renewal_answer=lease / 6,
            transaction=lease / 2 + lease / 6,
        )

    def answer_seconds(self, operation: Operation) -> float:
        return self.renewal_answer if operation == RENEWAL else self.answer

    def server_settings(self, operation: Operation = Operation.COMMIT) -> dict[str, str]:
        """The session settings sent at connect (asyncpg ``server_settings``)."""
        statement = self.renewal_statement if operation == RENEWAL else self.statement
        return {
            "statement_timeout": ms(statement),
            "idle_in_transaction_session_timeout": ms(self.idle_in_transaction),
            "tcp_user_timeout": ms(self.unacknowledged),
            "tcp_keepalives_idle": str(self.keepalive_idle),
            "tcp_keepalives_interval": str(self.keepalive_interval),
            "tcp_keepalives_count": str(self.keepalive_count),
        }


def ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))
