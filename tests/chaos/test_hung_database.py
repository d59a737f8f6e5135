"""A server that accepts but never answers: every wait of a daemon on it ends within its bound, counted."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import WorkerId
from sagad.errors import ConfigError, DatabaseUnreachable
from sagad.store.db import Database
from sagad.store.limits import SessionLimits
from sagad.store.runs import RunStore
from tests.chaos.invariants import report
from tests.chaos.proxy import Upstream, running_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE = 1.2
LIMITS = SessionLimits.for_lease(LEASE)  # a statement is abandoned after 0.8 s, a renewal after 0.2 s
SLACK = 0.5  # scheduling on a loaded machine
WORKER = WorkerId("cut-off")


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachable, match="no answer"):
        await call()
    return time.monotonic() - started


async def test_a_claim_and_a_renewal_that_get_no_answer_are_abandoned_within_their_bound_and_counted(
    throwaway_database_url: str,
) -> None:
    url = throwaway_database_url
    direct = await Database.connect(url)
    try:
        await RunStore(direct).submit_many([(sample_brief(Ending.COMPLETED, n), None) for n in range(9)])
        async with running_proxy(Upstream.of(url)) as proxy:
            daemon_db = await Database.connect(proxy.url_for(url), max_size=4, limits=LIMITS)
            timeouts: Counter[str] = Counter()
            daemon_db.count_timeouts(lambda operation: timeouts.update([operation]))
            runs = RunStore(daemon_db)
            try:
                held = await runs.claim(WORKER, 3, LEASE)
                leases = [c.lease for c in held]
                assert (await runs.renew(WORKER, leases, LEASE)).renewed == {lease.run_id for lease in leases}

                proxy.partition()
                claim = await _timed(lambda: runs.claim(WORKER, 3, LEASE))
                renewal = await _timed(lambda: runs.renew(WORKER, leases, LEASE))
                # Its connection was dropped: the next claim needs a new one, which gets no answer either.
                reconnect = await _timed(lambda: runs.claim(WORKER, 3, LEASE))
                # The abandoned claim, held by the partition, still reaches the server when it heals and
                # takes 3 runs nobody is told of (the claimer takes them up on its retry: unanswered_claims).
                proxy.heal()

                again = await runs.claim(WORKER, 3, LEASE)
            finally:
                await daemon_db.close()
    finally:
        await direct.close()
    assert LIMITS.answer <= claim < LIMITS.answer + SLACK
    assert LIMITS.renewal_answer <= renewal < LIMITS.renewal_answer + SLACK
    assert LIMITS.answer <= reconnect < LIMITS.answer + SLACK
    assert timeouts == {"claim": 2, "renewal": 1}
    assert len(again) == 3, "after the partition healed, a claim went through on a fresh connection"
    report(
        "hung database",
        lease=f"{LEASE}s",
        claim_abandoned_after=f"{claim:.2f}s (bound {LIMITS.answer:.2f}s)",
        renewal_abandoned_after=f"{renewal:.2f}s (bound {LIMITS.renewal_answer:.2f}s)",
        connect_abandoned_after=f"{reconnect:.2f}s",
        timeouts_counted=dict(timeouts),
    )


async def test_connecting_to_a_server_that_never_answers_fails_within_the_bound() -> None:
    async def read_forever(client: SocketStream) -> None:
        async with client:
            async for _ in client:
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, read_forever)
        started = time.monotonic()
        with pytest.raises(ConfigError, match="cannot connect"):
            await Database.connect(f"postgresql://nobody@127.0.0.1:{port}/silent", limits=LIMITS)
        waited = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert waited < LIMITS.answer + SLACK
