"""The backward half of a step actor: failures pass through it on their way to the compensator.

Each relay adds its step's tables to a failure and passes it one step back, so the failures reach
the compensator with every table that holds the run's rows. A step with an ``undo`` first takes
back what it did outside the database: the undos of the steps that had completed (and the failed
step's own, when its call may have had an effect) thus run in reverse step order, before the one
DELETE statement. An undo that keeps failing leaves the run ``compensating``, given back with the
reason; any daemon tries it again later, and nothing of the run is deleted until every undo is done.
"""

from __future__ import annotations

import logging
import random

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.attempts import LeaseLost, Tally, gave_up, retry_per_policy
from sagad.actors.batching import send_all, take_waiting
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation
from sagad.actors.ports import CompensationDeferrals
from sagad.actors.timeouts import Timeouts
from sagad.domain.pipeline import StepSpec, UndoContext
from sagad.domain.rows import Undone
from sagad.domain.runs import Lease, RunId
from sagad.errors import DatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)

_PASSED_AT_ONCE = 1000


class FailureRelay:
    """Passes failures one step back, taking back first what its step did outside the database."""

    def __init__(
        self,
        spec: StepSpec,
        *,
        store: CompensationDeferrals,
        ledger: Ledger,
        metrics: Metrics,
        retry_seconds: float,
    ) -> None:
        self.tables = frozenset(spec.tables)
        self._spec = spec
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._holding: dict[RunId, Compensation] = {}
        self._room = anyio.Semaphore(spec.concurrency)
        self._jitter = random.Random()
        self._timeouts = Timeouts(spec.timeout_seconds)

    def abandon(self) -> list[Lease]:
        leases = [message.lease for message in self._holding.values()]
        self._holding.clear()
        return leases

    async def run(
        self,
        inbox: MemoryObjectReceiveStream[Compensation],
        previous: MemoryObjectSendStream[Compensation],
    ) -> None:
        """Never waits on forward traffic, so the backward path always drains."""
        self._room = anyio.Semaphore(self._spec.concurrency)
        async with anyio.create_task_group() as undos:
            async for first in inbox:
                passing: list[Compensation] = []
                for failure in take_waiting(first, inbox, _PASSED_AT_ONCE):
                    undoes = self._undoes(failure)
                    message = failure.including(self.tables, None if undoes else self._nothing_to_undo(failure))
                    self._holding[message.lease.run_id] = message
                    if undoes:
                        await self._room.acquire()
                        undos.start_soon(self._undo_then_pass_back, message, previous)
                    else:
                        passing.append(message)
                await send_all(previous, passing)  # as a batch: the compensator deletes it in one statement
                for message in passing:
                    self._holding.pop(message.lease.run_id, None)

    def _undoes(self, message: Compensation) -> bool:
        step = self._spec.step
        completed = message.failed_step > step
        return self._spec.undo is not None and (completed or (message.failed_step is step and message.undo_failed_step))

    def _nothing_to_undo(self, message: Compensation) -> Undone | None:
        """For the history, a step that committed but has no undo; None for the failed step (it committed nothing)."""
        return Undone(self._spec.step, ran=False) if message.failed_step > self._spec.step else None

    async def _undo_then_pass_back(self, message: Compensation, previous: MemoryObjectSendStream[Compensation]) -> None:
        try:
            undone = await self._undo(message)
            if undone is not None:
                await previous.send(message.including(frozenset(), undone))
        except LeaseLost:
            self._metrics.fenced.labels("compensation").inc()
            self._ledger.lose([message.lease], "undo")
        finally:
            self._holding.pop(message.lease.run_id, None)
            self._room.release()

    async def _undo(self, message: Compensation) -> Undone | None:
        """Run the undo and say what it came to; None when it kept failing (the run is then given back for a later try).

        LeaseLost when another daemon took the run over meanwhile (the undo is then cancelled).
        """
        spec, undo = self._spec, self._spec.undo
        if undo is None:
            return Undone(spec.step, ran=False)
        step = spec.step.value
        tally = Tally()
        try:
            brief = message.brief
        except (ValueError, RecursionError):
            brief = None  # the first step failed on it: the undo gets the run and the reason

        async def attempt(_: int) -> None:
            deadline = anyio.current_time() + spec.timeout_seconds
            output = message.outputs.get(spec.step)
            await undo(UndoContext(message.lease.run_id, brief, output, message.reason, deadline))

        def attempted(outcome: str, took: float, error: Exception | None) -> None:
            tally.count(outcome, took, error)
            self._metrics.undos.labels(step, outcome).inc()

        try:
            await retry_per_policy(
                spec.retry,
                self._timeouts,
                attempt,
                attempted,
                self._jitter,
                ledger=self._ledger,
                lease=message.lease,
            )
        except LeaseLost:
            raise
        except Exception as error:
            reason = gave_up(f"undo of {step}", spec.retry.attempts, error, spec.timeout_seconds, message.lease)
            log.warning("run %s stays compensating: %s", message.lease.run_id, reason)
            await self._defer(message.lease, reason)
            return None
        return Undone(spec.step, True, tally.attempts, tally.seconds, tally.reasons(spec.timeout_seconds))

    async def _defer(self, lease: Lease, reason: str) -> None:
        """Give the run back, compensating, with why; whoever claims it next tries the undos again."""
        try:
            async for attempt in retry_database_errors():
                with attempt:
                    await self._store.defer_compensations([(lease, reason)], self._retry_seconds)
        except DatabaseError as error:
            log.warning("could not give back run %s, its lease will expire: %s", lease.run_id, error)
        self._ledger.drop([lease])
