"""In-memory fakes of the actors' ports (``actors/ports.py``), for the fast unit layer.

Fakes of the ports, never of SQL: ``FakeStore`` keeps runs, leases and committed steps in dicts and
keeps each promise its protocols make. A write is fenced as the store fences it: only the current
holder (worker and token) of a run at the right status and step gets it into ``Committed.owned``.
A run can be marked locked by another transaction (claims, renewals and releases pass over it; a
write reports it in ``Committed.skipped``), taken over by another daemon, its lease made to run
out, and chosen calls can be made to raise chosen database errors. ``tests/conformance`` holds
these promises to the SQL stores' behaviour.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.commit_policy import LINGER_CAP_SECONDS, LINGER_SHARE
from sagad.actors.ledger import Ledger
from sagad.actors.messages import Compensation, StepWork
from sagad.actors.ports import FaultPoints, NoFaults
from sagad.actors.relay import FailureRelay
from sagad.actors.step import StepActor
from sagad.domain.pipeline import RetryPolicy, StepCall, StepContext, StepResult, StepSpec
from sagad.domain.rows import Committed, Row, StepWrite, Undone
from sagad.domain.runs import ClaimedRun, Lease, LeaseToken, Renewal, RunId, RunStatus, StatusSample, WorkerId
from sagad.domain.steps import Step
from sagad.errors import DatabaseError
from sagad.metrics import Metrics

ME = WorkerId("me")
PEER = WorkerId("peer")
_ACTIVE = (RunStatus.RUNNING, RunStatus.COMPENSATING)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric's current value (0 when it has no such series yet)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class FakeRun:
    """One run as the store keeps it."""

    run_id: RunId
    brief: str
    status: RunStatus = RunStatus.PENDING
    next_step: Step = Step.NORMALIZE_BRIEF
    failed_step: Step | None = None
    last_error: str | None = None
    compensation_error: str | None = None
    attempts: int = 0
    token: int = 0
    claimed_by: WorkerId | None = None
    claimable: bool = True
    available_since: int = 0
    """When it last became claimable (a logical clock): claims take the longest available first."""
    outputs: dict[Step, Any] = field(default_factory=dict)
    rows: dict[str, list[Row]] = field(default_factory=dict)
    submitted: float = field(default_factory=time.monotonic)
    calls: dict[Step, tuple[int, str | None, int]] = field(default_factory=dict)
    """What its history keeps of each committed step's call: attempts, retry reasons, lease token."""
    undone: list[tuple[Step, str]] = field(default_factory=list)
    """What its history keeps of its compensation's undos: the step and the outcome."""


class Gate:
    """Holds the next call of a method until the test opens it."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.opened = anyio.Event()

    async def pass_through(self) -> None:
        self.entered.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


@dataclass
class _Fault:
    call: str
    error: type[DatabaseError]
    runs: frozenset[RunId] | None
    times: int | None
    answer_lost: bool


class FakeStore:
    """Runs and their leases in memory: StepWriter, Compensations, CompensationDeferrals and RunLeases.

    ``worker`` is the daemon the step and compensation writes are made for (as ``StepStore`` is built
    for one worker). Every change wakes ``until``, so tests wait on state, not on time.
    """

    def __init__(self, worker: WorkerId = ME) -> None:
        self.worker = worker
        self.runs: dict[RunId, FakeRun] = {}
        self.step_commits: list[tuple[Step, list[RunId]]] = []
        """Every commit_step call (those that raised too), with the runs of its writes in order."""
        self.compensations: list[list[RunId]] = []
        """Every compensate call (those that raised too), with its runs."""
        self.released: list[RunId] = []
        self.ended = 0
        """Runs that reached a terminal state."""
        self._faults: list[_Fault] = []
        self._locked: dict[RunId, int | None] = {}
        self._clock = itertools.count(1)
        self._gates: dict[str, Gate] = {}
        self._serial = 0
        self._changed = anyio.Event()

    # -- setting the scene --------------------------------------------------------------------

    def submit(
        self,
        brief: Any = None,
        *,
        status: RunStatus = RunStatus.PENDING,
        at: Step = Step.NORMALIZE_BRIEF,
        failed_step: Step | None = None,
        last_error: str | None = None,
        outputs: dict[Step, Any] | None = None,
        attempts: int = 0,
    ) -> RunId:
        """A new run, claimable at once, standing where the arguments say."""
        self._serial += 1
        run_id = RunId(uuid.UUID(int=self._serial))
        self.runs[run_id] = FakeRun(
            run_id,
            json.dumps(brief),
            status=status,
            next_step=at,
            failed_step=failed_step,
            last_error=last_error,
            outputs=dict(outputs or {}),
            attempts=attempts,
            available_since=next(self._clock),
        )
        self._change()
        return run_id

    def fail(
        self,
        call: str,
        error: type[DatabaseError],
        *,
        runs: Iterable[RunId] | None = None,
        times: int | None = 1,
        answer_lost: bool = False,
    ) -> None:
        """Make ``call`` raise ``error`` (``times`` times; None: always), for any runs or only these.

        For ``commit_step``, a run counts only when its write inserts rows (a constraint is broken
        by a row; a failure write inserts none). ``answer_lost``: the call does its work, then
        raises, as when a connection drops before the answer of a committed statement arrives.
        """
        self._faults.append(_Fault(call, error, None if runs is None else frozenset(runs), times, answer_lost))

    def gate(self, call: str) -> Gate:
        """Hold the next call of ``call`` (a method name) at its start until the gate is opened."""
        self._gates[call] = gate = Gate()
        return gate

    async def _enter(self, call: str) -> None:
        gate = self._gates.pop(call, None)
        if gate is not None:
            await gate.pass_through()
        else:
            await checkpoint()

    def lock(self, run_id: RunId, times: int | None = 1) -> None:
        """Another transaction holds the run's row for the next ``times`` statements locking it (None: until unlock)."""
        self._locked[run_id] = times

    def unlock(self, run_id: RunId) -> None:
        self._locked.pop(run_id, None)

    def expire(self, run_ids: Iterable[RunId]) -> None:
        """The leases (or deferrals) of these runs run out now: any daemon may claim them."""
        for run_id in run_ids:
            run = self.runs[run_id]
            if not run.claimable and not run.status.is_terminal:
                run.claimable = True
                run.available_since = next(self._clock)
        self._change()

    def take_over(self, run_id: RunId, worker: WorkerId = PEER) -> Lease:
        """Another daemon claims the run: a new token, another holder."""
        run = self.runs[run_id]
        run.token += 1
        run.claimed_by = worker
        run.claimable = False
        self._change()
        return Lease(run_id, LeaseToken(run.token))

    def lease(self, run_id: RunId) -> Lease:
        return Lease(run_id, LeaseToken(self.runs[run_id].token))

    @property
    def deferred(self) -> dict[RunId, str]:
        """Compensating runs given back with the reason they are held up."""
        return {run.run_id: run.compensation_error for run in self.runs.values() if run.compensation_error}

    def by_status(self, status: RunStatus) -> set[RunId]:
        return {run.run_id for run in self.runs.values() if run.status is status}

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate`` holds; it is checked again after every change of the store."""
        while not predicate():
            await self._changed.wait()

    def _change(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _raise_if_told(self, call: str, run_ids: Iterable[RunId], *, answered: bool = False) -> None:
        """Raise what the test asked for: before the call's work, or (``answered``) after it."""
        ids = set(run_ids)
        for fault in self._faults:
            if fault.call != call or fault.times == 0 or fault.answer_lost != answered:
                continue
            if fault.runs is not None and not fault.runs & ids:
                continue
            if fault.times is not None:
                fault.times -= 1
            raise fault.error(f"{call} failed on purpose")

    def _holds(self, worker: WorkerId, lease: Lease) -> FakeRun | None:
        run = self.runs.get(lease.run_id)
        if run is None or run.claimed_by != worker or run.token != lease.token:
            return None
        return run

    def _is_locked(self, run_id: RunId) -> bool:
        if run_id not in self._locked:
            return False
        left = self._locked[run_id]
        if left is not None:
            if left == 0:
                return False
            self._locked[run_id] = left - 1
        return True

    def _age(self, run: FakeRun) -> float:
        return max(0.0, time.monotonic() - run.submitted)

    # -- StepWriter ---------------------------------------------------------------------------

    async def commit_step(self, step: Step, writes: Sequence[StepWrite]) -> Committed:
        await self._enter("commit_step")
        self.step_commits.append((step, [write.lease.run_id for write in writes]))
        self._raise_if_told("commit_step", (w.lease.run_id for w in writes if w.failure is None))
        owned: dict[RunId, float] = {}
        skipped: set[RunId] = set()
        for write in writes:
            run = self.runs.get(write.lease.run_id)
            if run is None or run.token != write.lease.token:
                continue  # claimed again since: lost
            ours = run.claimed_by == self.worker
            if ours and run.status is RunStatus.RUNNING and run.next_step is step:
                if self._is_locked(run.run_id):
                    skipped.add(run.run_id)
                else:
                    self._advance(run, step, write)
                    owned[run.run_id] = self._age(run)
            elif (
                ours and (run.next_step > step or (run.status is RunStatus.COMPENSATING and run.failed_step is step))
            ) or (run.status is RunStatus.COMPLETED and step.is_last):
                owned[run.run_id] = self._age(run)  # an earlier attempt of this commit went through
        self._change()
        return Committed(owned=owned, skipped=frozenset(skipped))

    def _advance(self, run: FakeRun, step: Step, write: StepWrite) -> None:
        if write.failure is not None:
            run.status = RunStatus.COMPENSATING
            run.failed_step = step
            run.last_error = write.failure
            return
        for table, table_rows in write.rows.items():
            run.rows.setdefault(table, []).extend(table_rows)
        run.outputs[step] = json.loads(write.output)
        run.calls[step] = (write.attempts, write.retry_reasons, run.token)
        if step.is_last:
            self.ended += 1
            run.status = RunStatus.COMPLETED
            run.claimed_by = None
            run.claimable = False
        else:
            run.next_step = Step.at(step.index + 1)

    # -- Compensations and CompensationDeferrals ----------------------------------------------

    async def compensate(
        self, leases: Sequence[Lease], tables: frozenset[str], undone: Sequence[tuple[RunId, Undone]] = ()
    ) -> Committed:
        await self._enter("compensate")
        self.compensations.append([lease.run_id for lease in leases])
        self._raise_if_told("compensate", (lease.run_id for lease in leases))
        owned: dict[RunId, float] = {}
        rows = dict.fromkeys([*tables, "step_outputs"], 0)  # every table, as many deletes as it was given
        skipped: set[RunId] = set()
        for lease in leases:
            run = self.runs.get(lease.run_id)
            if run is not None and run.status is RunStatus.COMPENSATED and run.token == lease.token:
                owned[run.run_id] = self._age(run)  # an earlier attempt went through
                continue
            run = self._holds(self.worker, lease)
            if run is None or run.status is not RunStatus.COMPENSATING:
                continue
            if self._is_locked(run.run_id):
                skipped.add(run.run_id)
                continue
            for table in tables:
                rows[table] += len(run.rows.pop(table, []))
            rows["step_outputs"] += len(run.outputs)
            run.outputs.clear()
            run.undone += [(undo.step, undo.outcome) for run_id, undo in undone if run_id == run.run_id]
            self.ended += 1
            run.status = RunStatus.COMPENSATED
            run.compensation_error = None
            run.claimed_by = None
            run.claimable = False
            owned[run.run_id] = self._age(run)
        self._change()
        return Committed(owned=owned, rows=rows, skipped=frozenset(skipped))

    async def defer_compensations(self, errors: Sequence[tuple[Lease, str]], retry_seconds: float) -> set[RunId]:
        await self._enter("defer_compensations")
        self._raise_if_told("defer_compensations", (lease.run_id for lease, _ in errors))
        deferred = set()
        for lease, reason in errors:  # a row held elsewhere is waited for, as the store does: no skipping here
            run = self._holds(self.worker, lease)
            if run is not None and run.status is RunStatus.COMPENSATING:
                run.compensation_error = reason
                run.claimed_by = None
                run.claimable = False  # not before retry_seconds: a test lets them pass with ``expire``
                deferred.add(run.run_id)
        self._change()
        return deferred

    # -- RunLeases ----------------------------------------------------------------------------

    async def claim(self, worker: WorkerId, limit: int, lease_seconds: float) -> list[ClaimedRun]:
        await self._enter("claim")
        self._raise_if_told("claim", ())
        claimed: list[ClaimedRun] = []
        available = (run for run in self.runs.values() if run.claimable and not run.status.is_terminal)
        for run in sorted(available, key=lambda run: run.available_since):
            if len(claimed) == limit:
                break
            if self._is_locked(run.run_id):
                continue
            run.status = RunStatus.RUNNING if run.status is RunStatus.PENDING else run.status
            run.token += 1
            run.attempts += 1
            run.claimed_by = worker
            run.claimable = False
            claimed.append(self._claimed(run))
        self._change()
        self._raise_if_told("claim", (), answered=True)
        return claimed

    @staticmethod
    def _claimed(run: FakeRun) -> ClaimedRun:
        return ClaimedRun(
            lease=Lease(run.run_id, LeaseToken(run.token)),
            status=run.status,
            next_step=run.next_step,
            failed_step=run.failed_step,
            last_error=run.last_error,
            brief=run.brief,
            attempts=run.attempts,
            outputs=dict(run.outputs),
        )

    async def unanswered_claims(self, worker: WorkerId, known: Sequence[RunId]) -> list[ClaimedRun]:
        await self._enter("unanswered_claims")
        self._raise_if_told("unanswered_claims", ())
        return [
            self._claimed(run)
            for run in self.runs.values()
            if run.claimed_by == worker and not run.claimable and run.status in _ACTIVE and run.run_id not in set(known)
        ]

    async def renew(self, worker: WorkerId, leases: Sequence[Lease], lease_seconds: float) -> Renewal:
        await self._enter("renew")
        self._raise_if_told("renew", (lease.run_id for lease in leases))
        renewed = set()
        for lease in leases:
            run = self._holds(worker, lease)
            if run is not None and run.status in _ACTIVE and not self._is_locked(run.run_id):
                run.claimable = False
                renewed.add(run.run_id)
        self._change()
        return Renewal(frozenset(renewed), frozenset())

    async def release(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]:
        await self._enter("release")
        self._raise_if_told("release", (lease.run_id for lease in leases))
        released = set()
        for lease in leases:
            run = self._holds(worker, lease)
            if run is not None and run.status in _ACTIVE and not self._is_locked(run.run_id):
                run.claimed_by = None
                run.claimable = True
                run.available_since = next(self._clock)
                released.add(run.run_id)
                self.released.append(run.run_id)
        self._change()
        return released

    async def taken_over(self, worker: WorkerId, leases: Sequence[Lease]) -> set[RunId]:
        await self._enter("taken_over")
        taken = set()
        for lease in leases:
            run = self.runs.get(lease.run_id)
            if run is None:
                continue
            if run.token != lease.token or (run.status in _ACTIVE and run.claimed_by != worker):
                taken.add(run.run_id)
        return taken

    async def sample_statuses(self) -> StatusSample:
        await self._enter("sample_statuses")
        counts = Counter(run.status for run in self.runs.values())
        return StatusSample(
            in_flight={status: n for status, n in counts.items() if not status.is_terminal},
            finished={status: n for status, n in counts.items() if status.is_terminal},
            total=len(self.runs),
        )

    async def count_overdue(self, grace_seconds: float = 0.0) -> int:
        """Held runs whose lease ran out; the fake's clock stands still, so each ran out just now."""
        await self._enter("count_overdue")
        if grace_seconds > 0:
            return 0
        return sum(1 for run in self.runs.values() if run.claimed_by is not None and run.claimable)


async def hold(store: FakeStore, ledger: Ledger, limit: int = 1000) -> list[ClaimedRun]:
    """Claim what the store has and hold it in the ledger, as the claimer does."""
    claimed = await store.claim(store.worker, limit, 30.0)
    for run in claimed:
        ledger.hold(run.lease)
    return claimed


def work_of(run: ClaimedRun) -> StepWork:
    """The forward message the claimer makes of a running run."""
    return StepWork(run.lease, run.brief, run.outputs)


class FakeWakeup:
    """Wakes a waiting claimer when a test says runs were submitted, else after the poll interval."""

    def __init__(self) -> None:
        self.waiting = anyio.Event()
        """Set once a claimer waits."""
        self._woken = anyio.Event()

    async def wait(self, seconds: float) -> None:
        self.waiting.set()
        with anyio.move_on_after(seconds):
            await self._woken.wait()
        self._woken = anyio.Event()

    def wake(self) -> None:
        self._woken.set()


class FakeReadiness:
    """Records what the daemon reported about taking work."""

    def __init__(self) -> None:
        self.reports: list[str] = []

    def claim_succeeded(self) -> None:
        self.reports.append("claim_succeeded")

    def claim_failed(self) -> None:
        self.reports.append("claim_failed")

    def draining(self) -> None:
        self.reports.append("draining")


class FakePlans:
    """Counts the times prepared statements were to be re-planned."""

    def __init__(self) -> None:
        self.refreshed = 0
        self.refreshed_once = anyio.Event()

    def refresh_plans(self) -> None:
        self.refreshed += 1
        self.refreshed_once.set()


class CrashAfterCommit:
    """Fault points that crash a step actor after its commit, ``times`` times, before the hand-off."""

    def __init__(self, step: Step, times: int = 1) -> None:
        self.step = step
        self.times = times
        self.crashed_with: list[Lease] = []

    async def after_step_commit(self, step: Step, leases: Sequence[Lease]) -> None:
        if step is self.step and self.times:
            self.times -= 1
            self.crashed_with.extend(leases)
            raise RuntimeError("crash between commit and hand-off")


# -- scenes: actors running on real memory streams against the fakes ------------------------

T = TypeVar("T")

FAST = RetryPolicy(attempts=3, first_wait_seconds=0.001, max_wait_seconds=0.002, jitter_seconds=0.0)
"""Retries that cost milliseconds."""
DEADLINE = 1.0
"""Seconds any one scene may take; all of them take a few milliseconds."""


def spec_of(step: Step, call: StepCall, **options: Any) -> StepSpec:
    options.setdefault("retry", FAST)
    options.setdefault("timeout_seconds", DEADLINE)
    return StepSpec(step, call, **options)


def outputs_before(step: Step, brief: Any) -> dict[Step, Any]:
    """What a run at ``step`` has committed before it: the normalized brief, then one output a step."""
    earlier = [before for before in Step if before < step]
    return {before: brief if before is Step.NORMALIZE_BRIEF else {"by": before.value} for before in earlier}


async def echo(ctx: StepContext) -> StepResult:
    """A step that writes nothing and passes the run's brief on as its output."""
    return StepResult(output=ctx.brief)


def opened(
    stack: AsyncExitStack, kind: type[T], size: int
) -> tuple[MemoryObjectSendStream[T], MemoryObjectReceiveStream[T]]:
    """A memory stream of ``kind`` items whose two ends ``stack`` closes."""
    send, receive_ = anyio.create_memory_object_stream[T](size)
    stack.enter_context(send)
    stack.enter_context(receive_)
    return send, receive_


async def receive(stream: MemoryObjectReceiveStream[T], n: int) -> list[T]:
    return [await stream.receive() for _ in range(n)]


@dataclass
class Lanes:
    """The ends of a running actor's streams that a test holds."""

    inbox: MemoryObjectSendStream[StepWork]
    forward: MemoryObjectReceiveStream[StepWork]
    failures: MemoryObjectReceiveStream[Compensation]


class Scene:
    """One daemon's worth of fakes: a store, a ledger and fresh metrics."""

    def __init__(self, capacity: int = 1000) -> None:
        self.store = FakeStore()
        self.metrics = Metrics()
        self.ledger = Ledger(capacity, self.metrics)

    def sample(self, name: str, **labels: str) -> float:
        return sample(self.metrics, name, **labels)

    async def runs_at(self, step: Step, briefs: Sequence[Any]) -> list[StepWork]:
        """Runs claimed and held at ``step``, one per brief, as the claimer hands them to it."""
        for brief in briefs:
            if step is Step.NORMALIZE_BRIEF:
                self.store.submit(brief)
            else:
                self.store.submit(brief, status=RunStatus.RUNNING, at=step, outputs=outputs_before(step, brief))
        return [work_of(run) for run in await hold(self.store, self.ledger)]

    def relay(self, spec: StepSpec) -> FailureRelay:
        return FailureRelay(spec, store=self.store, ledger=self.ledger, metrics=self.metrics, retry_seconds=30.0)

    def actor(
        self,
        spec: StepSpec,
        *,
        batch_limit: int = 100,
        faults: FaultPoints | None = None,
        linger_share: float = LINGER_SHARE,
        linger_cap_seconds: float = LINGER_CAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        commit_slots: anyio.Semaphore | None = None,
    ) -> StepActor:
        return StepActor(
            spec=spec,
            store=self.store,
            ledger=self.ledger,
            metrics=self.metrics,
            faults=faults or NoFaults(),
            batch_limit=batch_limit,
            relay=self.relay(spec),
            linger_share=linger_share,
            linger_cap_seconds=linger_cap_seconds,
            clock=clock,
            commit_slots=commit_slots,
        )

    @asynccontextmanager
    async def running(self, actor: StepActor, *, pending: Sequence[StepWork] = ()) -> AsyncIterator[Lanes]:
        """The actor running, with ``pending`` already in its inbox; stopped when the block ends."""
        inbox_in, inbox = anyio.create_memory_object_stream[StepWork](100)
        forward_in, forward = anyio.create_memory_object_stream[StepWork](100)
        failures_in, failures = anyio.create_memory_object_stream[Compensation](100)
        with inbox_in, inbox, forward_in, forward, failures_in, failures, anyio.fail_after(DEADLINE):
            for work in pending:
                inbox_in.send_nowait(work)
            async with anyio.create_task_group() as tg:
                tg.start_soon(actor.run, inbox, None if actor.step.is_last else forward_in, failures_in)
                yield Lanes(inbox_in, forward, failures)
                tg.cancel_scope.cancel()

    @asynccontextmanager
    async def relaying(
        self, relay: FailureRelay
    ) -> AsyncIterator[tuple[MemoryObjectSendStream[Compensation], MemoryObjectReceiveStream[Compensation]]]:
        """The relay running: its inbox, and where it passes failures back to."""
        inbox_in, inbox = anyio.create_memory_object_stream[Compensation](100)
        previous_in, previous = anyio.create_memory_object_stream[Compensation](100)
        with inbox_in, inbox, previous_in, previous, anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run, inbox, previous_in)
                yield inbox_in, previous
                tg.cancel_scope.cancel()
