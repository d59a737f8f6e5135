"""The start of the forward path: claims runs and routes each to where it stands."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from anyio.streams.memory import MemoryObjectSendStream

from actors.ledger import Ledger
from actors.messages import Compensation, HasLease, StepWork
from actors.ports import RunLeases, Wakeup
from actors.retry import retrying
from metrics import Metrics
from store.records import ClaimedRun, WorkerId
from store.schema import STEPS

log = logging.getLogger(__name__)


class Claimer:
    """Claims as many runs as the ledger has room for, whenever there may be runs to claim."""

    def __init__(
        self,
        *,
        store: RunLeases,
        ledger: Ledger,
        metrics: Metrics,
        wakeup: Wakeup,
        worker: WorkerId,
        lease_seconds: float,
        claim_limit: int,
        poll_seconds: float,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._wakeup = wakeup
        self._worker = worker
        self._lease_seconds = lease_seconds
        self._claim_limit = claim_limit
        self._poll_seconds = poll_seconds
        self.in_hand: tuple[HasLease, ...] = ()

    async def run(
        self,
        steps: Sequence[MemoryObjectSendStream[StepWork]],
        failures: Sequence[MemoryObjectSendStream[Compensation]],
    ) -> None:
        """``steps[i]`` is step i's inbox; ``failures[i]`` is where step i's failures start back."""

        def on_retry(error: BaseException) -> None:
            log.warning("claim failed, retrying: %s", error)
            self._metrics.db_errors.labels("transient").inc()

        while True:
            await self._ledger.wait_for_room()
            limit = min(self._ledger.room(), self._claim_limit)
            async for attempt in retrying(on_retry):
                with attempt:
                    claimed = await self._store.claim(self._worker, limit, self._lease_seconds)
            self._metrics.claims.inc(len(claimed))
            for run in claimed:
                self._ledger.hold(run.lease)
            self.in_hand = tuple(claimed)
            for n, run in enumerate(claimed):
                await self._route(run, steps, failures)
                self.in_hand = tuple(claimed[n + 1 :])
            if len(claimed) < limit:
                await self._wakeup.wait(self._poll_seconds)

    async def _route(
        self,
        run: ClaimedRun,
        steps: Sequence[MemoryObjectSendStream[StepWork]],
        failures: Sequence[MemoryObjectSendStream[Compensation]],
    ) -> None:
        # The table's check constraints make every claimable state routable.
        if run.status == "compensating":
            assert run.failed_step is not None
            reason = run.last_error or "unknown"
            await failures[STEPS.index(run.failed_step)].send(Compensation(run.lease, run.failed_step, reason))
        else:
            await steps[run.next_step].send(StepWork(run.lease, run.brief))
