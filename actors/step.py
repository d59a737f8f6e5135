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
from collections.abc import Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.attempts import truncated
from sagad.actors.batching import send_all, take_waiting
from sagad.actors.calls import LOST, Called, StepCaller
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, StepWork
from sagad.actors.ports import FaultPoints, StepWriter
from sagad.actors.relay import FailureRelay
from sagad.actors.workers import Workers
from sagad.domain.pipeline import StepSpec
from sagad.domain.rows import Committed, StepWrite
from sagad.domain.runs import Lease, RunId, RunStatus
from sagad.errors import PermanentDatabaseError
from sagad.metrics import Metrics

log = logging.getLogger(__name__)

# How long to wait before committing again runs whose rows another transaction held, when
# nothing else is waiting: enough not to spin on a lock held for long.
_LOCKED_PAUSE_SECONDS = 0.05
NEAR_COMMIT_SECONDS = 0.01
"""Longer than a step's commit takes on a database nearby, shorter than one round trip to a far one."""
LINGER_SHARE = 0.05
"""Of a step's typical call time, how long a run that finished waits for others to commit with."""
LINGER_CAP_SECONDS = 0.05

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
        self._commits_in_flight = commits_in_flight
        self._pipeline_after = pipeline_after_seconds
        self._linger_share = linger_share
        self._linger_cap = linger_cap_seconds
        self._closed = False

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
        self._finished.append((work, called, time.monotonic()))
        # With a commit in flight, the committer wakes when it ends (or by the clock); lingering, when
        # the batch is full (or by the clock).
        if self._waiting_for_runs or len(self._finished) == self._batch_limit:
            self._changed.set()

    def _done(self, lease: Lease) -> None:
        self._holding.pop(lease.run_id, None)

    async def _commit_finished(
        self, forward: MemoryObjectSendStream[StepWork] | None, failures: MemoryObjectSendStream[Compensation]
    ) -> None:
        """Commit what finished since the last commit, as one statement, then hand each run on.

        One commit is in flight at a time while commits are quick (the next batch gathers meanwhile).
        Another starts beside it, up to ``commits_in_flight``, only once runs have waited
        ``pipeline_after`` seconds and the newest commit has taken longer than a near database takes
        (a database far away): near, each commit would otherwise take the few runs that finished in
        the last milliseconds, and the server's cost per statement, not the runs, would fill its CPU.

        With no commit in flight, the first run to finish a step that waits on something lingers, up
        to ``linger_share`` of the step's typical call time (at most ``linger_cap_seconds``) or until
        the batch is full, for others to commit with. Slow calls finish one by one: committed as they
        come, in batches of a few, the cost of each statement takes the CPU of the database and of
        the daemon from the runs. A run of a 1 s step waits 50 ms at most.
        """
        async with anyio.create_task_group() as commits:
            while True:
                if not self._finished:
                    if self._closed and not self._holding and not self._committing:
                        return
                    self._waiting_for_runs = True
                    await self._wait_for_change()
                    self._waiting_for_runs = False
                    continue
                if self._committing:
                    if self._committing >= self._commits_in_flight:
                        await self._wait_for_change()
                        continue
                    now = time.monotonic()
                    # Until both have passed: the waiting runs' pause, and a near commit's time.
                    pause = max(
                        self._finished[0][2] + self._pipeline_after - now,
                        self._last_commit_started + NEAR_COMMIT_SECONDS - now,
                    )
                    if pause > 0:
                        await self._wait_for_change(pause)
                        continue
                elif not self.spec.instant and len(self._finished) < self._batch_limit:
                    linger = min(self._linger_cap, self._linger_share * self._caller.typical_seconds)
                    pause = self._finished[0][2] + linger - time.monotonic()
                    if pause > 0:
                        await self._wait_for_change(pause)
                        continue
                batch = self._finished[: self._batch_limit]
                del self._finished[: len(batch)]
                self._committing += 1
                self._last_commit_started = time.monotonic()
                commits.start_soon(self._commit_and_hand_on, batch, forward, failures)

    async def _wait_for_change(self, seconds: float | None = None) -> None:
        """Until a run finishes its call or a commit ends (or ``seconds`` pass)."""
        with anyio.move_on_after(math.inf if seconds is None else seconds):
            await self._changed.wait()
        self._changed = anyio.Event()

    async def _commit_and_hand_on(
        self,
        batch: list[Finished],
        forward: MemoryObjectSendStream[StepWork] | None,
        failures: MemoryObjectSendStream[Compensation],
    ) -> None:
        try:
            committed, writes = await self._commit([self._write(work, called) for work, called, _ in batch])
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
                    await anyio.sleep(_LOCKED_PAUSE_SECONDS)
                self._finished.extend(again)
        finally:
            self._committing -= 1
            self._changed.set()

    @staticmethod
    def _write(work: StepWork, called: Called) -> StepWrite:
        if called.result is None:
            return StepWrite(work.lease, failure=called.failure)
        return StepWrite(work.lease, rows=called.result.rows, output=called.output_json)

    async def _commit(self, writes: Sequence[StepWrite]) -> tuple[Committed, list[StepWrite]]:
        """Commit the batch, retrying transient errors; a permanent error fails the runs one by one.

        Returns what was committed, with the writes as committed: a run the database refused is
        written again as a failure (with the database's reason), and handed on as one.
        """
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
        except PermanentDatabaseError as error:
            self._metrics.db_errors.labels("permanent").inc()
            if len(writes) > 1:
                parts = [await self._commit([write]) for write in writes]
                return _merge([part for part, _ in parts]), [write for _, part_writes in parts for write in part_writes]
            log.error("step %s refused run %s: %s", step, writes[0].lease.run_id, error)  # noqa: TRY400
            if writes[0].failure is not None:
                raise  # not even the failure could be recorded: the supervisor frees the run
            return await self._commit([StepWrite(writes[0].lease, failure=truncated(f"{step}: {error}"))])
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
