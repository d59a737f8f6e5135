"""The built-in pipeline: deterministic generators on the step contract, each fed by the step before.

It is the default of ``sagad run`` and what the benchmarks measure: no network and no model, so
the database is what sets the pace. The one exception is a brief whose delivery destination is an
HTTP endpoint among ``--delivery-hosts``: the deliver step POSTs the package there.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from sagad.content.delivery import Delivery
from sagad.content.draft import generate_draft
from sagad.content.normalize import normalize_brief
from sagad.content.qc import qc_evaluate
from sagad.content.strategy import generate_strategy
from sagad.domain.pipeline import Pipeline, StepCall, StepContext, StepResult, StepSpec, brief_after
from sagad.domain.runs import RunId
from sagad.domain.steps import Step
from sagad.errors import StepFailed


def builtin_pipeline(*, delivery_hosts: frozenset[str] = frozenset(), delivery_timeout: float = 10.0) -> Pipeline:
    """The five built-in steps; delivery speaks HTTP only to ``delivery_hosts`` (``host`` or ``host:port``)."""
    delivery = Delivery(delivery_hosts, delivery_timeout)
    return Pipeline(
        steps=(
            StepSpec(Step.NORMALIZE_BRIEF, normalize_brief, instant=True),
            StepSpec(Step.GENERATE_STRATEGY, generate_strategy, instant=True),
            StepSpec(Step.GENERATE_DRAFT, generate_draft, instant=True),
            StepSpec(Step.QC_EVALUATE, qc_evaluate, instant=True),
            # Without an HTTP host to deliver to, delivery never waits on anything either.
            StepSpec(
                Step.DELIVER,
                delivery,
                undo=delivery.undo,
                timeout_seconds=3 * delivery_timeout,
                instant=not delivery_hosts,
            ),
        ),
        lifespan=delivery.open,
    )


_DRAWN_AHEAD = 1 << 16


def lognormal_waits(median_seconds: float, p99_seconds: float, seed: int | None = None) -> Callable[[], float]:
    """Waits drawn from a lognormal distribution with this median and 99th percentile.

    Drawn ahead, 65,536 of them, then picked at random: a draw costs an index, not a logarithm, in
    a daemon making thousands of calls a second.
    """
    if not 0 < median_seconds <= p99_seconds:
        raise ValueError(f"need 0 < median <= p99, got median {median_seconds} s and p99 {p99_seconds} s")
    sigma = math.log(p99_seconds / median_seconds) / 2.3263  # the 99th percentile of N(0, 1)
    draw = random.Random(seed)
    waits = [draw.lognormvariate(math.log(median_seconds), sigma) for _ in range(_DRAWN_AHEAD)]
    pick = draw.getrandbits
    return lambda: waits[pick(16)]


def _after_a_wait(call: StepCall, wait: Callable[[], float]) -> StepCall:
    async def waited(ctx: StepContext) -> StepResult:
        # asyncio's sleep, which the daemon's loop is: anyio's looks up the running backend first, and a
        # benchmark's stand-in for a service should cost the daemon as little as the service would.
        await asyncio.sleep(wait())
        return await call(ctx)

    return waited


def with_latency(pipeline: Pipeline, wait: Callable[[], float], concurrency: int | None = None) -> Pipeline:
    """``pipeline`` with a simulated wait (a service's latency) before each step's call.

    ``concurrency``, if given, replaces each step's own: a simulated service takes any number of calls.
    """
    return replace(
        pipeline,
        steps=tuple(
            replace(
                spec,
                call=_after_a_wait(spec.call, wait),
                instant=False,
                concurrency=spec.concurrency if concurrency is None else concurrency,
            )
            for spec in pipeline.steps
        ),
    )


@dataclass(frozen=True, slots=True)
class Walk:
    """A run taken through a pipeline in-process: each passed step's result, and where it failed."""

    results: tuple[StepResult, ...]
    failed_step: Step | None
    reason: str | None


async def walk(pipeline: Pipeline, run_id: uuid.UUID, submitted: Any) -> Walk:
    """What a daemon would commit for a run of ``submitted``, step after step (no retries, no database).

    Tests and benchmarks use it to know each run's rows and ending.
    """
    outputs: dict[Step, Any] = {}
    results: list[StepResult] = []
    for spec in pipeline.steps:
        ctx = StepContext(RunId(run_id), brief_after(submitted, outputs), dict(outputs), deadline=math.inf)
        try:
            result = await spec.call(ctx)
        except StepFailed as failure:
            return Walk(tuple(results), spec.step, f"{spec.step}: {failure}")
        results.append(result)
        outputs[spec.step] = orjson.loads(orjson.dumps(result.output))  # as the daemon hands it on
    return Walk(tuple(results), None, None)
