"""A step actor: calls its step for each run, up to its concurrency at once, and group-commits what finished.

No connection, transaction or lock is held while a call runs. Whatever finished since the last
commit is committed as one statement; then each run is handed on: to the next step, to the
failure relay, or out of the daemon as completed. A step declared ``instant`` is awaited inline
(it never waits on anything); any other runs in a task of its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.attempts import truncated
from sagad.actors.batching import send_all, take_waiting
from sagad.actors.calls import LOST, Called, StepCaller
from sagad.actors.commit_policy import LINGER_CAP_SECONDS, LINGER_SHARE, CommitPolicy
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, StepWork
from sagad.actors.ports import FaultPoints, StepWriter
from sagad.actors.refusals import LOCKED_PAUSE_SECONDS, each_alone_on_refusal
from sagad.actors.relay import FailureRelay
from sagad.actors.workers import Workers
from sagad.domain.pipeline import StepSpec
from sagad.domain.rows import Committed, StepWrite
from sagad.domain.runs import Lease, RunId, RunStatus
from sagad.errors import PermanentDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)

Finished = tuple[StepWork, Called, float]


class StepActor:
    """One pipeline step, as its spec declares it."""

    def __init__(
        self,
        *,
        spec: StepSpec,
        store: StepWriter,
        ledger: Ledger,
        metrics: Metrics,
        faults: FaultPoints,
        batch_limit: int,
        relay: FailureRelay,
        commits_in_flight: int = 4,
        pipeline_after_seconds: float = 0.005,
        linger_share: float = LINGER_SHARE,
        linger_cap_seconds: float = LINGER_CAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        commit_slots: anyio.Semaphore | None = None,
    ) -> None:
        self.spec = spec
        self.step = spec.step
        self.relay = relay
        self._store = store
        self._ledger = ledger
        self._metrics = metrics
        self._faults = faults
        self._batch_limit = batch_limit
        self._caller = StepCaller(spec, ledger, metrics)
        self._in_flight = metrics.calls_in_flight.labels(spec.step.value)
        self._commit_durations = {o: metrics.step_duration.labels(spec.step.value, o) for o in ("ok", "failed")}
        self._commit_runs = metrics.commit_batch.labels(spec.step.value)
        self._holding: dict[RunId, StepWork] = {}
        """Runs taken from the inbox and not yet handed on; the supervisor frees them on a crash."""
        self._finished: list[Finished] = []
        """Runs whose call finished, waiting to be committed, with when they finished."""
        self._changed = anyio.Event()
        self._waiting_for_runs = False
        self._committing = 0
        self._last_commit_started = 0.0
        self._policy = CommitPolicy(
            batch_limit,
            instant=spec.instant,
            commits_in_flight=commits_in_flight,
            pipeline_after_seconds=pipeline_after_seconds,
            linger_share=linger_share,
            linger_cap_seconds=linger_cap_seconds,
        )
        self._clock = clock
        self._closed = False
        self._commit_slots = commit_slots
        """Shared by every step, one per connection commits may take: a batch is taken once a connection
        can carry it, so that it holds every run that finished meanwhile (far away, where each statement
        costs a round trip, batches stay full); None: no bound."""

    def abandon(self) -> list[Lease]:
        """The leases of every run this actor held when it crashed; it holds none afterwards."""
        leases = [work.lease for work in self._holding.values()]
        self._holding.clear()
        self._finished.clear()
        return leases

    async def run(
        self,
        inbox: MemoryObjectReceiveStream[StepWork],
        forward: MemoryObjectSendStream[StepWork] | None,
        failures: MemoryObjectSendStream[Compensation],
    ) -> None:
        """Call the step for every run that arrives; a committer hands the finished ones on.

        Calls run in workers (started as they are needed, up to the spec's concurrency; as many as a
        batch are kept when idle), or inline for an instant step.
        """
        self._closed = False
        self._committing = 0
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._commit_finished, forward, failures)
            workers = Workers(self._call, self.spec.concurrency, tasks, keep_idle=self._batch_limit)
            async for first in inbox:
                arrived = take_waiting(first, inbox, self._batch_limit)  # no wait between them
                for work in arrived:
                    self._holding[work.lease.run_id] = work
                for work in arrived:
                    if self.spec.instant:
                        self._finish(work, await self._caller.call(work))
                    else:
                        workers.put(work)
            workers.close()
            self._closed = True
            self._changed.set()

    async def _call(self, work: StepWork) -> None:
        self._in_flight.inc()
        try:
            called = await self._caller.call(work)
        finally:
            self._in_flight.dec()
        if called is LOST:
            self._done(work.lease)
        else:
            self._finish(work, called)

    def _finish(self, work: StepWork, called: Called) -> None:
        self._finished.append((work, called, self._clock()))
        # With a commit in flight, the committer wakes when it ends (or by the clock); lingering, when
        # the batch is full (or by the clock).
        if self._waiting_for_runs or len(self._finished) == self._batch_limit:
            self._changed.set()

    def _done(self, lease: Lease) -> None:
        self._holding.pop(lease.run_id, None)

    async def _commit_finished(
        self, forward: MemoryObjectSendStream[StepWork] | None, failures: MemoryObjectSendStream[Compensation]
    ) -> None:
        """Commit what finished since the last commit, as one statement, then hand each run on, when the policy says."""
        async with anyio.create_task_group() as commits:
            while True:
                if not self._finished:
                    if self._closed and not self._holding and not self._committing:
                        return
                    self._waiting_for_runs = True
                    await self._wait_for_change()
                    self._waiting_for_runs = False
                    continue
                now = self._clock()
                pause = self._policy.pause(
                    now=now,
                    waiting=len(self._finished),
                    oldest=self._finished[0][2],
                    committing=self._committing,
                    last_started=self._last_commit_started,
                    typical_call=self._caller.typical_seconds,
                )
                if pause > 0:
                    await self._wait_for_change(pause)
                    continue
                if self._commit_slots is not None:
                    await self._commit_slots.acquire()
                batch = self._finished[: self._batch_limit]
                del self._finished[: len(batch)]
                self._committing += 1
                self._last_commit_started = now
                commits.start_soon(self._commit_and_hand_on, batch, forward, failures)

    async def _wait_for_change(self, seconds: float = math.inf) -> None:
        """Until a run finishes its call or a commit ends (or ``seconds`` pass)."""
        with anyio.move_on_after(seconds):
            await self._changed.wait()
        self._changed = anyio.Event()

    async def _commit_and_hand_on(
        self,
        batch: list[Finished],
        forward: MemoryObjectSendStream[StepWork] | None,
        failures: MemoryObjectSendStream[Compensation],
    ) -> None:
        try:
            try:
                committed, writes = await self._commit([self._write(work, called) for work, called, _ in batch])
            finally:
                if self._commit_slots is not None:
                    self._commit_slots.release()  # before handing on: the next inbox may be full
            await self._faults.after_step_commit(self.step, [write.lease for write in writes])
            again = [finished for finished in batch if finished[0].lease.run_id in committed.skipped]
            handed = [
                self._hand_on(work, called, write, committed)
                for (work, called, _), write in zip(batch, writes, strict=True)
                if work.lease.run_id not in committed.skipped
            ]
            # The batch goes on as a batch: the next step takes it whole, and commits it as one.
            if forward is not None:
                await send_all(forward, [item for item in handed if isinstance(item, StepWork)])
            await send_all(failures, [item for item in handed if isinstance(item, Compensation)])
            for work, _, _ in batch:
                if work.lease.run_id not in committed.skipped:
                    self._done(work.lease)
            if again:
                self._metrics.step_retries.labels(self.step.value, "locked").inc(len(again))
                if len(again) == len(batch):
                    await anyio.sleep(LOCKED_PAUSE_SECONDS)
                self._finished.extend(again)
        finally:
            self._committing -= 1
            self._changed.set()

    @staticmethod
    def _write(work: StepWork, called: Called) -> StepWrite:
        if called.result is None:
            return StepWrite(
                work.lease,
                failure=called.failure,
                attempts=called.attempts,
                call_seconds=called.call_seconds,
                retry_reasons=called.retry_reasons,
            )
        return StepWrite(
            work.lease,
            rows=called.result.rows,
            output=called.output_json,
            attempts=called.attempts,
            call_seconds=called.call_seconds,
            retry_reasons=called.retry_reasons,
        )

    async def _commit(self, writes: Sequence[StepWrite]) -> tuple[Committed, list[StepWrite]]:
        """Commit the batch; a batch the database refuses is committed run by run.

        Returns what was committed, with the writes as committed: a run the database refused is
        written again as a failure (with the database's reason), and handed on as one.
        """
        parts = await each_alone_on_refusal(writes, self._commit_once, self._refused)
        if len(parts) == 1:
            return parts[0]
        return _merge([part for part, _ in parts]), [write for _, part_writes in parts for write in part_writes]

    async def _refused(self, write: StepWrite, error: PermanentDatabaseError) -> tuple[Committed, list[StepWrite]]:
        """A run the database refuses on its own fails, with the database's reason.

        If even that is refused, the actor crashes, and the supervisor frees the run.
        """
        log.error("step %s refused run %s: %s", self.step.value, write.lease.run_id, error)
        if write.failure is not None:
            raise error
        return await self._commit_once([StepWrite(write.lease, failure=truncated(f"{self.step.value}: {error}"))])

    async def _commit_once(self, writes: Sequence[StepWrite]) -> tuple[Committed, list[StepWrite]]:
        """One statement for the batch, retrying transient errors."""
        started = time.perf_counter()
        step = self.step.value

        def on_retry(error: BaseException) -> None:
            log.warning("step %s: retrying %d runs after %s", step, len(writes), error)
            self._metrics.db_errors.labels("transient").inc()
            self._metrics.step_retries.labels(step, "database").inc()
            self._metrics.step_duration.labels(step, "retried").observe(time.perf_counter() - started)

        try:
            async for attempt in retry_database_errors(on_retry):
                with attempt:
                    committed = await self._store.commit_step(self.step, writes)
        except PermanentDatabaseError:
            self._metrics.db_errors.labels("permanent").inc()
            raise
        elapsed = time.perf_counter() - started
        self._commit_runs.observe(len(writes))
        for write in writes:
            self._commit_durations["ok" if write.failure is None else "failed"].observe(elapsed)
        return committed, list(writes)

    def _hand_on(
        self, work: StepWork, called: Called, write: StepWrite, committed: Committed
    ) -> StepWork | Compensation | None:
        """Where the run goes after its commit: on to the next step, back as a failure, or nowhere."""
        lease, result = work.lease, called.result
        if lease.run_id not in committed.owned:
            self._metrics.fenced.labels("step").inc()
            self._ledger.lose([lease], "step")
            return None
        if write.failure is not None or result is None:
            reason = write.failure or "failed"
            # A call that succeeded may have had effects even if its commit was refused.
            clean = called.clean and result is None
            return Compensation(lease, self.step, reason, work.submitted, work.outputs, undo_failed_step=not clean)
        if self.spec.step.is_last:
            self._ledger.finish(lease, RunStatus.COMPLETED, committed.owned[lease.run_id])
            return None
        return work.after(self.step, called.output)


def _merge(parts: Sequence[Committed]) -> Committed:
    owned = {run: age for part in parts for run, age in part.owned.items()}
    rows: dict[str, int] = {}
    for part in parts:
        for table, count in part.rows.items():
            rows[table] = rows.get(table, 0) + count
    return Committed(owned=owned, rows=rows, skipped=frozenset().union(*(part.skipped for part in parts)))
