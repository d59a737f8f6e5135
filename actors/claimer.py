"""The start of the forward path: claims runs and routes each to where it stands."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from anyio.streams.memory import MemoryObjectSendStream

from sagad.actors.batching import send_all
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, StepWork
from sagad.actors.ports import Readiness, RunLeases, StepWriter, Unobserved, Wakeup
from sagad.domain.rows import StepWrite
from sagad.domain.runs import ClaimedRun, Lease, RunStatus, WorkerId
from sagad.domain.steps import Step
from sagad.errors import DatabaseUnreachable
from sagad.metrics import Metrics

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
        steps_store: StepWriter,
        max_attempts: int,
        readiness: Readiness | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._wakeup = wakeup
        self._worker = worker
        self._lease_seconds = lease_seconds
        self._claim_limit = claim_limit
        self._poll_seconds = poll_seconds
        self._steps_store = steps_store
        self._max_attempts = max_attempts
        self._readiness = readiness or Unobserved()
        self._holding: tuple[ClaimedRun, ...] = ()
        """Claimed runs not yet handed to their step; the supervisor frees them on a crash."""

    def abandon(self) -> list[Lease]:
        leases = [run.lease for run in self._holding]
        self._holding = ()
        return leases

    async def run(
        self,
        steps: Sequence[MemoryObjectSendStream[StepWork]],
        failures: Sequence[MemoryObjectSendStream[Compensation]],
    ) -> None:
        """``steps[i]`` is step i's inbox; ``failures[i]`` is where step i's failures start back."""

        def on_retry(error: BaseException) -> None:
            # An outage is reported once by the store, when it starts and when it ends.
            level = logging.DEBUG if isinstance(error, DatabaseUnreachable) else logging.WARNING
            log.log(level, "claim failed, retrying: %s", error)
            self._metrics.db_errors.labels("transient").inc()
            self._readiness.claim_failed()

        while True:
            # A full batch of room before claiming: runs claimed together are committed together at
            # every step, and a claim of the few that just finished would fragment the batches for good.
            await self._ledger.wait_for_room(self._claim_limit)
            limit = min(self._ledger.room(), self._claim_limit)
            async for attempt in retry_database_errors(on_retry):
                with attempt:
                    claimed = await self._store.claim(self._worker, limit, self._lease_seconds)
                    if attempt.number > 1:
                        # A failed attempt may have committed and lost only its answer: those runs are
                        # ours under a live lease, and would otherwise wait for it to expire.
                        known = [lease.run_id for lease in self._ledger.snapshot()] + [r.lease.run_id for r in claimed]
                        claimed += await self._store.unanswered_claims(self._worker, known)
            self._readiness.claim_succeeded()
            self._metrics.claims.inc(len(claimed))
            self._metrics.retries_started.inc(sum(run.starts_a_retry for run in claimed))
            for run in claimed:
                self._ledger.hold(run.lease)
            self._holding = tuple(claimed)
            claimed = await self._fail_poison_runs(claimed)
            await self._route(claimed, steps, failures)
            self._holding = ()
            if len(claimed) < limit:
                await self._wakeup.wait(self._poll_seconds)

    async def _fail_poison_runs(self, claimed: list[ClaimedRun]) -> list[ClaimedRun]:
        """Runs claimed too often without finishing fail at their step, instead of being retried forever.

        A run comes back only when its daemon crashed, hung or gave it back; one that keeps doing
        that to daemons is compensated with the reason. A compensation is always finished.
        """
        poison = [r for r in claimed if r.status is RunStatus.RUNNING and r.attempts > self._max_attempts]
        if not poison:
            return claimed
        failed: list[ClaimedRun] = []
        for step in Step:
            at_step = [r for r in poison if r.next_step is step]
            if not at_step:
                continue
            reason = f"{step}: poison run: claimed {{}} times without finishing (limit {self._max_attempts})"
            writes = [StepWrite(r.lease, failure=reason.format(r.attempts)) for r in at_step]
            async for attempt in retry_database_errors():
                with attempt:
                    committed = await self._steps_store.commit_step(step, writes)
            for run, write in zip(at_step, writes, strict=True):
                if run.lease.run_id in committed.owned:
                    failed.append(
                        replace(run, status=RunStatus.COMPENSATING, failed_step=step, last_error=write.failure)
                    )
                elif run.lease.run_id in committed.skipped:
                    failed.append(run)  # its row is held elsewhere: it goes on as claimed, failed next time
                else:
                    self._ledger.lose([run.lease], "step")
        self._metrics.poison_runs.inc(sum(1 for run in failed if run.status is RunStatus.COMPENSATING))
        log.warning("failed %d poison runs", len(failed))
        return [r for r in claimed if r not in poison] + failed

    async def _route(
        self,
        claimed: Sequence[ClaimedRun],
        steps: Sequence[MemoryObjectSendStream[StepWork]],
        failures: Sequence[MemoryObjectSendStream[Compensation]],
    ) -> None:
        """Each run to the inbox of its next step, or of its failed step's relay; a claim goes on as a batch."""
        work: dict[int, list[StepWork]] = defaultdict(list)
        undone: dict[int, list[Compensation]] = defaultdict(list)
        for run in claimed:
            # The table's check constraints make every claimable state routable.
            if run.status is RunStatus.COMPENSATING:
                failed_step = run.failed_step or run.next_step  # the table's CHECK makes failed_step present
                reason = run.last_error or "unknown"
                message = Compensation(run.lease, failed_step, reason, run.brief, run.outputs)
                undone[failed_step.index].append(message)
            else:
                work[run.next_step.index].append(StepWork(run.lease, run.brief, run.outputs))
        for index, items in work.items():
            await send_all(steps[index], items)
        for index, messages in undone.items():
            await send_all(failures[index], messages)
