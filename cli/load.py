"""The load generator: submits a mix of briefs built to end a known way (through ``sagad.Client``, as an
application would), and follows them to the end."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio

from sagad.actors.database_retry import retry_database_errors
from sagad.client import Client
from sagad.content.samples import Ending, sample_brief
from sagad.domain.runs import RunId
from sagad.store.records import RunEnd
from sagad.store.runs import RunStore

SUBMIT_BATCH = 200
SUBMITTERS = 4
"""Clients the load test submits through, a batch each at a time: one alone, a database 50 ms away
caps an open loop at 20 batches/s."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Mix:
    """How many runs of each outcome a load test submits."""

    counts: dict[Ending, int]

    @classmethod
    def of(cls, runs: int, fail_qc: float, fail_delivery: float, invalid: float) -> Mix:
        failing = {
            Ending.QC_FAIL: round(runs * fail_qc),
            Ending.DELIVERY_FAIL: round(runs * fail_delivery),
            Ending.INVALID: round(runs * invalid),
        }
        completed = runs - sum(failing.values())
        if completed < 0:
            raise ValueError("--fail-qc, --fail-delivery and --invalid add up to more than 1")
        return cls({Ending.COMPLETED: completed, **failing})

    def shuffled(self, seed: int = 0) -> list[Ending]:
        outcomes = [outcome for outcome, n in self.counts.items() for _ in range(n)]
        random.Random(seed).shuffle(outcomes)
        return outcomes

    def expected_statuses(self) -> dict[str, int]:
        completed = self.counts[Ending.COMPLETED]
        return {"completed": completed, "compensated": sum(self.counts.values()) - completed}


@dataclass(slots=True)
class Outages:
    """How often, and how long, the load test waited for the database to answer again."""

    count: int = 0
    seconds: float = 0.0
    _since: float | None = None

    def lost(self) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self.count += 1

    def answered(self) -> None:
        if self._since is not None:
            self.seconds += time.monotonic() - self._since
            self._since = None


async def patiently(call: Callable[[], Awaitable[T]], outages: Outages) -> T:
    """``call()``, retried through transient database errors with capped backoff, as the daemon does."""
    async for attempt in retry_database_errors(lambda _: outages.lost()):
        with attempt:
            result = await call()
    outages.answered()
    return result


@dataclass(slots=True)
class Progress:
    submitted: int = 0
    finished: dict[RunId, RunEnd] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    outages: Outages = field(default_factory=Outages)

    def counts(self) -> Counter[str]:
        return Counter(f.outcome for f in self.finished.values())


def brief_for(ending: Ending, seed: int, destination: str | None) -> dict[str, Any]:
    """A sample brief; its package goes to ``destination`` when one is given (an HTTP endpoint, say)."""
    brief = sample_brief(ending, seed)
    if destination is not None:
        brief["delivery"] = {**brief["delivery"], "destination": destination}
    return brief


@asynccontextmanager
async def submitting_clients(url: str, count: int = SUBMITTERS) -> AsyncIterator[list[Client]]:
    """``count`` connected clients, as an application's workers would hold them; closed when the block ends."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Client(url)) for _ in range(count)]


async def submit_all(
    clients: Sequence[Client],
    outcomes: list[Ending],
    rate: float,
    progress: Progress,
    ids: list[RunId],
    destination: str | None = None,
) -> None:
    """Submit every brief through ``sagad.Client``: as fast as possible (closed loop, rate 0) or at ``rate`` runs/s.

    Each batch goes out in a task of its own through whichever client is free: in the closed loop as
    soon as one is, in the open loop on time (a slow submission, a database far away, does not hold up
    the next one; when every client is busy, what fell due meanwhile goes out together). Each brief carries
    an idempotency key of this load test, so that a submission retried after a lost connection
    (which may have committed) returns the runs it made instead of making them twice.
    """
    started = time.monotonic()
    batch = SUBMIT_BATCH if rate <= 0 else max(1, min(SUBMIT_BATCH, int(rate / 50)))
    test = uuid.uuid4().hex[:12]
    free_send, free = anyio.create_memory_object_stream[Client](len(clients))
    for client in clients:
        free_send.send_nowait(client)
    taken = 0
    """Briefs handed to a submission so far, in order."""

    async def submit(client: Client, start: int, end: int) -> None:
        chunk: list[tuple[Any, str | None]] = [
            (brief_for(o, n, destination), f"loadtest-{test}-{n}") for n, o in enumerate(outcomes[start:end], start)
        ]
        try:
            submitted = await patiently(partial(client.submit_many, chunk), progress.outages)
        finally:
            free_send.send_nowait(client)
        ids.extend(submitted)
        progress.submitted += len(submitted)

    async def submit_due(end: int) -> None:
        # Whatever is due once a client is free: when every client is busy (a database far away),
        # the late briefs go out together, and the rate holds.
        nonlocal taken
        client = await free.receive()
        due = min(len(outcomes), max(end, math.floor((time.monotonic() - started) * rate)))
        start, taken = taken, max(taken, due)
        if start < taken:
            await submit(client, start, taken)
        else:
            free_send.send_nowait(client)

    with free_send, free:
        async with anyio.create_task_group() as tg:
            for start in range(0, len(outcomes), batch):
                if rate > 0:
                    await anyio.sleep(max(0.0, started + start / rate - time.monotonic()))
                    tg.start_soon(submit_due, start + batch)
                else:
                    # As fast as the clients go: the next batch as soon as one of them is free.
                    tg.start_soon(submit, await free.receive(), start, start + batch)


async def follow(
    runs: RunStore, ids: list[RunId], total: int, progress: Progress, on_change: Callable[[], None]
) -> None:
    """Poll until all ``total`` runs are terminal, recording each one's end."""
    while len(progress.finished) < total:
        waiting = [run_id for run_id in ids if run_id not in progress.finished]
        for start in range(0, len(waiting), 10_000):
            part = waiting[start : start + 10_000]
            progress.finished.update(await patiently(partial(runs.ends, part), progress.outages))
        on_change()
        await anyio.sleep(1.0 if len(progress.finished) < total * 0.9 else 0.2)
