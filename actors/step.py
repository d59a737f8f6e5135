"""The shape every step actor shares: group commit forward, relay of failures backward."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.batching import take_waiting
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, HasLease, StepWork
from sagad.actors.ports import FaultPoints, StepWriter
from sagad.actors.relay import FailureRelay
from sagad.actors.retry import retrying
from sagad.content.brief import Brief
from sagad.content.normalize import normalized
from sagad.domain.rows import Committed, Row, StepWrite
from sagad.domain.runs import RunStatus
from sagad.domain.steps import Step
from sagad.errors import PermanentDatabaseError, StepFailed
from sagad.metrics import Metrics

log = logging.getLogger(__name__)


def _bounded(reason: str, limit: int = 2000) -> str:
    """A failure reason short enough to keep on the run, however much the input said."""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


class StepActor:
    """One pipeline step. Subclasses name the step and say which rows it writes for a run."""

    step: ClassVar[Step]

    @staticmethod
    def generate(run_id: uuid.UUID, brief: Brief) -> dict[str, list[Row]]:
        """The step's content generator: the rows for one run, or StepFailed."""
        raise NotImplementedError

    def __init__(
        self, *, store: StepWriter, ledger: Ledger, metrics: Metrics, faults: FaultPoints, batch_limit: int
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._faults = faults
        self._batch_limit = batch_limit
        self.tables = frozenset(self.step.tables)
        self.in_hand: tuple[HasLease, ...] = ()
        """Messages taken from the inbox and not yet handed on; the supervisor frees them on a crash."""
        self.relay = FailureRelay(self.tables)

    async def run(
        self,
        inbox: MemoryObjectReceiveStream[StepWork],
        forward: MemoryObjectSendStream[StepWork] | None,
        failures: MemoryObjectSendStream[Compensation],
    ) -> None:
        """Commit each batch waiting in the inbox as one transaction, then hand every run on."""
        async for first in inbox:
            batch = take_waiting(first, inbox, self._batch_limit)
            self.in_hand = tuple(batch)
            batch = [self._normalized(work) for work in batch]
            writes = [self._write(work) for work in batch]
            committed = await self._commit(writes)
            await self._faults.after_step_commit(self.step, [w.lease for w in writes])
            for work, write in zip(batch, writes, strict=True):
                await self._hand_on(work, write, committed, forward, failures)
            self.in_hand = ()

    @staticmethod
    def _normalized(work: StepWork) -> StepWork:
        """The brief is validated once per run in this daemon, then travels normalized."""
        if type(work.brief) is Brief:
            return work
        try:
            return StepWork(work.lease, normalized(work.brief))
        except StepFailed:
            return work  # _write fails it again, and routes the failure

    def _write(self, work: StepWork) -> StepWrite:
        try:
            brief = work.brief if type(work.brief) is Brief else normalized(work.brief)
            return StepWrite(work.lease, rows=self.generate(work.lease.run_id, brief))
        except StepFailed as failure:
            return StepWrite(work.lease, failure=_bounded(f"{self.step}: {failure}"))
        except Exception as bug:  # a generator bug fails this run only, never the batch
            log.exception("step %s raised for run %s", self.step, work.lease.run_id)
            return StepWrite(work.lease, failure=f"{self.step}: {type(bug).__name__}: {bug}")

    async def _commit(self, writes: Sequence[StepWrite]) -> Committed:
        """Commit the batch, retrying transient errors; a permanent error fails the runs one by one."""
        started = time.perf_counter()

        def on_retry(error: BaseException) -> None:
            log.warning("step %s: retrying %d runs after %s", self.step, len(writes), error)
            self._metrics.db_errors.labels("transient").inc()
            self._metrics.step_retries.labels(self.step.value).inc()
            self._metrics.step_duration.labels(self.step.value, "retried").observe(time.perf_counter() - started)

        try:
            async for attempt in retrying(on_retry):
                with attempt:
                    committed = await self._store.commit_step(self.step, writes)
        except PermanentDatabaseError as error:
            self._metrics.db_errors.labels("permanent").inc()
            if len(writes) > 1:
                return self._merge([await self._commit([write]) for write in writes])
            log.error("step %s refused run %s: %s", self.step, writes[0].lease.run_id, error)  # noqa: TRY400
            if writes[0].failure is not None:
                raise  # not even the failure could be recorded: the supervisor frees the run
            return await self._commit([StepWrite(writes[0].lease, failure=f"{self.step}: {error}")])
        elapsed = time.perf_counter() - started
        for write in writes:
            outcome = "ok" if write.failure is None else "failed"
            self._metrics.step_duration.labels(self.step.value, outcome).observe(elapsed)
        return committed

    @staticmethod
    def _merge(parts: Sequence[Committed]) -> Committed:
        owned = {run: age for part in parts for run, age in part.owned.items()}
        rows: dict[str, int] = {}
        for part in parts:
            for table, count in part.rows.items():
                rows[table] = rows.get(table, 0) + count
        return Committed(owned=owned, rows=rows)

    async def _hand_on(
        self,
        work: StepWork,
        write: StepWrite,
        committed: Committed,
        forward: MemoryObjectSendStream[StepWork] | None,
        failures: MemoryObjectSendStream[Compensation],
    ) -> None:
        lease = work.lease
        if lease.run_id not in committed.owned:
            self._metrics.fenced.labels("step").inc()
            self._ledger.drop([lease])
        elif write.failure is not None:
            await failures.send(Compensation(lease, self.step, write.failure))
        elif forward is None:
            self._ledger.finish(lease, RunStatus.COMPLETED, committed.owned[lease.run_id])
        else:
            await forward.send(work)
