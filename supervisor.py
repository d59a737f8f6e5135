"""Wires the actors together and keeps them running: the only place streams and task groups are made.

Forward traffic flows claimer -> step 1 -> ... -> step 5; failures flow from the failing step's
relay back through every earlier step's relay to the compensator. Each actor reads its forward
and its backward inbox in separate tasks, and the backward path ends in the compensator, which
waits on nothing but the database. A step's calls and a relay's undos run in tasks that wait on
their step's services, never on another inbox. So every wait points forward along a chain or
backward along a chain that ends in a sink: there is no cycle, and bounded inboxes cannot deadlock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sagad.actors.claimer import Claimer
from sagad.actors.compensator import Compensator
from sagad.actors.database_retry import retry_database_errors
from sagad.actors.ledger import Ledger
from sagad.actors.loop_lag import LoopLag
from sagad.actors.messages import Compensation, StepWork
from sagad.actors.ports import FaultPoints, NoFaults, Readiness, Unobserved
from sagad.actors.reaper import Reaper
from sagad.actors.relay import FailureRelay
from sagad.actors.renewer import Renewer
from sagad.actors.sampler import StatusSampler
from sagad.actors.step import StepActor
from sagad.content.pipeline import builtin_pipeline
from sagad.domain.pipeline import Pipeline
from sagad.domain.runs import Lease, WorkerId
from sagad.errors import DatabaseError
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.liveness import DeadWorkers, WorkerLock
from sagad.store.notify import Polling, SubmissionListener
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    """How one daemon runs."""

    worker_id: WorkerId
    lease_seconds: float = 30.0
    max_inflight: int = 1000
    batch_limit: int = 100
    inbox_size: int = 256
    """Messages an inbox buffers: more than a batch, so that a batch passes from step to step whole."""
    poll_seconds: float = 1.0
    drain_seconds: float = 10.0
    sample_seconds: float = 5.0
    restart_delay_seconds: float = 0.1
    max_attempts: int = 5
    """Claims a run may take before it is failed as a poison run."""
    undo_retry_seconds: float = 30.0
    """How long a run whose undo kept failing waits, compensating, before it is tried again."""
    commits_in_flight: int = 3
    """Commits of one step in flight at once: more than one only when the database is far away
    (``ConnectionBudget.commits_in_flight``: what the work pool has room for)."""
    commit_connections: int | None = None
    """Step commits in flight at once, every step's together (the work pool less one, kept for claims and
    compensations: ``ConnectionBudget.commit_connections``); None: no bound but the pool's."""
    reap_seconds: float | None = 0.5
    """How often to look for dead daemons whose runs to take over; None: wait for their leases."""


class _Supervised(Protocol):
    def abandon(self) -> list[Lease]:
        """The leases of the runs it held when it crashed; it holds none afterwards."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Inbox(Generic[T]):
    send: MemoryObjectSendStream[T]
    receive: MemoryObjectReceiveStream[T]

    @classmethod
    def of_size(cls, size: int) -> _Inbox[T]:
        send, receive = anyio.create_memory_object_stream[T](size)
        return cls(send, receive)


def _buffered(stream: MemoryObjectReceiveStream[Any]) -> int:
    return stream.statistics().current_buffer_used


class Supervisor:
    """Runs one daemon: claimer, a step actor and a relay per step, compensator, renewer, samplers and reaper."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        metrics: Metrics,
        faults: FaultPoints | None = None,
        pipeline: Pipeline | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pipeline = pipeline if pipeline is not None else builtin_pipeline()
        self._db = db
        self.runs = RunStore(db)
        self.ledger = Ledger(settings.max_inflight, metrics)
        self._steps = StepStore(db, settings.worker_id)
        self._faults = faults or NoFaults()
        self._readiness = readiness or Unobserved()
        self._lock = WorkerLock(db, settings.worker_id, check_seconds=settings.lease_seconds / 3)
        metrics.worker_lock_held.set_function(lambda: int(self._lock.held))

    @property
    def _locking(self) -> bool:
        """Whether the budget has a session for the worker lock (else peers wait for this daemon's leases)."""
        return self._db.locks

    def _wakeup(self) -> SubmissionListener | Polling:
        """LISTEN where the budget has a session for it; else the claimer polls."""
        return SubmissionListener(self._db) if self._db.listens else Polling()

    async def run(self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop`` is set, then drain in-flight runs and release what is left.

        WorkerIdInUse when a live daemon runs under the same worker id. Runs a previous life of this
        worker id still held are given back at start, to be claimed at once.
        """
        self._db.count_timeouts(lambda operation: self.metrics.db_timeouts.labels(operation).inc())
        if self._locking:
            await self._lock.take()
        try:
            if await self._give_back_previous_life(stop):
                await self._run(stop, task_status)
            else:
                task_status.started()  # stopped before it began: nothing to drain
        finally:
            await self._lock.release()

    async def _give_back_previous_life(self, stop: anyio.Event) -> bool:
        """Release what this worker id still holds from a killed life; False when told to stop first."""
        async for attempt in retry_database_errors():
            with attempt:
                if stop.is_set():
                    return False
                given_back = await self.runs.release_all(self.settings.worker_id)
        if given_back:
            log.info("gave back %d runs a previous daemon %s held", given_back, self.settings.worker_id)
        return True

    async def _run(self, stop: anyio.Event, task_status: TaskStatus[None]) -> None:
        s = self.settings
        specs = self.pipeline.steps
        forward = [_Inbox[StepWork].of_size(s.inbox_size) for _ in specs]
        backward = [_Inbox[Compensation].of_size(s.inbox_size) for _ in specs]
        to_compensator = _Inbox[Compensation].of_size(s.inbox_size)
        wakeup = self._wakeup()
        slots = None if s.commit_connections is None else anyio.Semaphore(s.commit_connections)
        actors = [
            StepActor(
                spec=spec,
                store=self._steps,
                ledger=self.ledger,
                metrics=self.metrics,
                faults=self._faults,
                batch_limit=s.batch_limit,
                commits_in_flight=s.commits_in_flight,
                commit_slots=slots,
                relay=FailureRelay(
                    spec,
                    store=self._steps,
                    ledger=self.ledger,
                    metrics=self.metrics,
                    retry_seconds=s.undo_retry_seconds,
                ),
            )
            for spec in specs
        ]
        compensator = Compensator(
            store=self._steps, ledger=self.ledger, metrics=self.metrics, batch_limit=s.batch_limit
        )
        claimer = Claimer(
            store=self.runs,
            ledger=self.ledger,
            metrics=self.metrics,
            wakeup=wakeup,
            worker=s.worker_id,
            lease_seconds=s.lease_seconds,
            claim_limit=s.batch_limit,
            poll_seconds=s.poll_seconds,
            steps_store=self._steps,
            max_attempts=s.max_attempts,
            readiness=self._readiness,
        )
        renewer = Renewer(
            store=self.runs,
            ledger=self.ledger,
            metrics=self.metrics,
            worker=s.worker_id,
            lease_seconds=s.lease_seconds,
        )
        sampler = StatusSampler(store=self.runs, plans=self._db, metrics=self.metrics, every_seconds=s.sample_seconds)
        lag = LoopLag(self.metrics)
        reaper = self._reaper()
        self._export_depths([a.step.value for a in actors], forward, backward, to_compensator)

        claiming = anyio.CancelScope()

        async def claim() -> None:
            with claiming:
                run = partial(claimer.run, [f.send for f in forward], [b.send for b in backward])
                await self._supervise("claimer", claimer, run)

        async with AsyncExitStack() as resources:  # every stream is closed once the tasks using it are gone
            if self.pipeline.lifespan is not None:
                await resources.enter_async_context(self.pipeline.lifespan())
            inboxes: list[_Inbox[Any]] = [*forward, *backward, to_compensator]
            for inbox in inboxes:
                resources.enter_context(inbox.send)
                resources.enter_context(inbox.receive)
            async with anyio.create_task_group() as tg:
                self._keep_sessions(tg, wakeup)
                if reaper is not None:
                    tg.start_soon(self._supervise, "reaper", reaper, reaper.run)
                tg.start_soon(self._supervise, "renewer", renewer, renewer.run)
                tg.start_soon(self._supervise, "sampler", sampler, sampler.run)
                tg.start_soon(self._supervise, "event_loop", lag, lag.run)
                compensate = partial(compensator.run, to_compensator.receive)
                tg.start_soon(self._supervise, "compensator", compensator, compensate)
                for i, actor in enumerate(actors):
                    previous = backward[i - 1].send if i else to_compensator.send
                    following = forward[i + 1].send if i + 1 < len(actors) else None
                    relay = partial(actor.relay.run, backward[i].receive, previous)
                    tg.start_soon(self._supervise, actor.step.value, actor.relay, relay)
                    work = partial(actor.run, forward[i].receive, following, backward[i].send)
                    tg.start_soon(self._supervise, actor.step.value, actor, work)
                tg.start_soon(claim)
                task_status.started()
                await stop.wait()
                self._readiness.draining()
                claiming.cancel()
                await self._drain()
                tg.start_soon(self._interrupt_statements)
                tg.cancel_scope.cancel()
            await self._release_remaining()

    def _keep_sessions(self, tg: TaskGroup, wakeup: SubmissionListener | Polling) -> None:
        """The sessions the budget has room for: LISTEN, and the worker lock taken again when lost."""
        tg.start_soon(wakeup.run)
        if self._locking:
            tg.start_soon(self._lock.keep)

    def _reaper(self) -> Reaper | None:
        s = self.settings
        if s.reap_seconds is None or not self._locking:
            return None  # without worker locks every peer looks dead: runs wait for their leases
        return Reaper(
            store=DeadWorkers(self._db),
            metrics=self.metrics,
            worker=s.worker_id,
            every_seconds=s.reap_seconds,
            stalled_seconds=s.lease_seconds / 6,  # as idle_in_transaction_session_timeout (store/limits.py)
        )

    async def _supervise(self, name: str, actor: _Supervised, run: Callable[[], Awaitable[None]]) -> None:
        """Run an actor; when it crashes, free the runs it held and start it again."""
        while True:
            try:
                await run()
                return
            except Exception:
                log.exception("actor %s crashed; restarting it", name)
                self.metrics.actor_restarts.labels(name).inc()
                await self._give_back(actor.abandon())
                await anyio.sleep(self.settings.restart_delay_seconds)

    async def _give_back(self, leases: list[Lease]) -> None:
        """Release runs so that a claim (ours or a peer's) resumes them from their last commit."""
        if not leases:
            return
        try:
            await self.runs.release(self.settings.worker_id, leases)
        except DatabaseError as error:
            log.warning("could not release %d runs, their leases will expire: %s", len(leases), error)
        self.ledger.drop(leases)

    async def _drain(self) -> None:
        with anyio.move_on_after(self.settings.drain_seconds):
            await self.ledger.wait_until_empty()

    async def _interrupt_statements(self) -> None:
        """Once the actors are cancelled, end the statements they still wait on (a lock held elsewhere,
        say): statements are shielded from cancellation, and the runs they lock could not be released."""
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()  # the actors see their cancellation first: none starts new work
            while self._db.busy:
                try:
                    await self._db.interrupt()
                except DatabaseError as error:
                    log.warning("could not interrupt statements under way: %s", error)
                await anyio.sleep(0.05)

    async def _release_remaining(self) -> None:
        with anyio.move_on_after(5, shield=True):
            await self._give_back(self.ledger.snapshot())

    def _export_depths(
        self,
        steps: list[str],
        forward: list[_Inbox[StepWork]],
        backward: list[_Inbox[Compensation]],
        to_compensator: _Inbox[Compensation],
    ) -> None:
        """Inbox depths are read from the streams' statistics when Prometheus scrapes."""
        depth = self.metrics.inbox_depth
        for step, f, b in zip(steps, forward, backward, strict=True):
            depth.labels(step, "forward").set_function(partial(_buffered, f.receive))
            depth.labels(step, "backward").set_function(partial(_buffered, b.receive))
        depth.labels("compensator", "backward").set_function(partial(_buffered, to_compensator.receive))
