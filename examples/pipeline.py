"""A pipeline of your own: sagad's five steps, written against its step contract.

Each step stands for a call to one of your services. Here the "services" are stand-ins (a short
wait, and now and then an answer that says "try again"), except delivery, which POSTs the package
to a real HTTP endpoint when ``EXAMPLE_CMS_URL`` names one. Run it from the repository root:

    sagad run --pipeline examples.pipeline:pipeline

A step gets a ``StepContext`` (the run id, the normalized brief, the earlier steps' outputs, a
deadline) and returns a ``StepResult``: the rows it writes into its own tables, keyed with
``ctx.key(...)`` so that a retried step writes nothing twice, and an output (JSON) for the steps
after it. It raises ``StepFailed`` when the run cannot go on (the run is compensated) and
``TransientStepError`` when trying again may help. An ``undo`` takes back what a step did outside
the database; sagad runs the undos in reverse step order before it deletes the run's rows.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import anyio

from sagad import (
    Pipeline,
    RetryPolicy,
    Step,
    StepContext,
    StepFailed,
    StepResult,
    StepSpec,
    TransientStepError,
    UndoContext,
)
from sagad.content import delivery, draft, qc, strategy
from sagad.content.brief import BriefData
from sagad.content.normalize import normalize_brief

SERVICE_SECONDS = float(os.environ.get("EXAMPLE_SERVICE_SECONDS", "0.05"))
"""How long each stand-in service takes to answer."""
CMS_URL = os.environ.get("EXAMPLE_CMS_URL", "")
"""Where delivery POSTs packages (e.g. the loopback receiver); empty: packages are only recorded."""
DELIVERIES = 50
"""Deliveries in flight at once; as many undos (retractions) may run beside them."""


async def _service(ctx: StepContext, name: str) -> None:
    """A stand-in for a call to a service: it takes a while, and the first call of one run in ten is told to retry."""
    await anyio.sleep(SERVICE_SECONDS)
    if ctx.attempt == 1 and zlib.crc32(f"{name}/{ctx.run_id}".encode()) % 10 == 0:
        raise TransientStepError(f"{name} is busy (429)")


async def generate_strategy(ctx: StepContext) -> StepResult:
    await _service(ctx, "planner")
    planned = strategy.plan(cast(BriefData, ctx.brief))
    return StepResult(strategy.rows(ctx.run_id, planned), planned)


async def generate_draft(ctx: StepContext) -> StepResult:
    await _service(ctx, "writer")
    written = draft.write(cast(BriefData, ctx.brief), ctx.outputs[Step.GENERATE_STRATEGY])
    return StepResult(draft.rows(ctx.run_id, written), written)


async def qc_evaluate(ctx: StepContext) -> StepResult:
    await _service(ctx, "reviewer")
    verdict = qc.evaluate(ctx.outputs[Step.GENERATE_DRAFT])  # raises StepFailed below the threshold
    return StepResult(qc.rows(ctx.run_id, verdict), verdict)


class Cms:
    """Publishes packages to a CMS over HTTP, once per package whatever the retries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """The session every delivery shares, open while the daemon runs (the pipeline's lifespan)."""
        # aiohttp caps a session at 100 connections by default: a silent queue in front of the CMS once
        # the step's calls and its undos outnumber it. Sized to what the pipeline lets run at once.
        connector = aiohttp.TCPConnector(limit=2 * DELIVERIES)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            self._session = session
            yield

    async def deliver(self, ctx: StepContext) -> StepResult:
        sent = delivery.package(
            ctx.run_id, cast(BriefData, ctx.brief), ctx.outputs[Step.GENERATE_DRAFT], ctx.outputs[Step.QC_EVALUATE]
        )
        if self.url:
            await self._call("POST", ctx, sent)
        return StepResult(delivery.rows(ctx.run_id, sent), {"package_id": sent["package_id"], "cms": self.url})

    async def retract(self, ctx: UndoContext) -> None:
        """Undo: take the package back (the CMS answers 404 when it never had it; fine)."""
        if self.url:
            await self._call("DELETE", ctx, None)

    async def _call(self, method: str, ctx: StepContext | UndoContext, body: dict[str, Any] | None) -> None:
        if self._session is None:
            raise RuntimeError("run the pipeline inside its lifespan")
        # The key is derived from the run: a retried or reclaimed delivery is recognised by the CMS.
        headers = {"Idempotency-Key": delivery.idempotency_key(ctx.run_id)}
        try:
            async with self._session.request(method, self.url, json=body, headers=headers) as answer:
                status = answer.status
        except (TimeoutError, aiohttp.ClientError) as error:
            raise TransientStepError(f"CMS unreachable: {type(error).__name__}") from None
        if status in (408, 429) or status >= 500:
            raise TransientStepError(f"CMS answered {status}")
        if status >= 400 and not (method == "DELETE" and status == 404):
            raise StepFailed(f"CMS refused the package: {status}")


def build() -> Pipeline:
    """The pipeline: what to call for each step, how long to wait, how often to retry, how many at once."""
    cms = Cms(CMS_URL)
    services = RetryPolicy(attempts=4, first_wait_seconds=0.05, max_wait_seconds=2.0, jitter_seconds=0.05)
    return Pipeline(
        steps=(
            StepSpec(Step.NORMALIZE_BRIEF, normalize_brief, instant=True),  # sagad's own, as it is
            StepSpec(Step.GENERATE_STRATEGY, generate_strategy, timeout_seconds=30, retry=services, concurrency=200),
            StepSpec(Step.GENERATE_DRAFT, generate_draft, timeout_seconds=60, retry=services, concurrency=200),
            StepSpec(Step.QC_EVALUATE, qc_evaluate, timeout_seconds=30, retry=services, concurrency=200),
            StepSpec(
                Step.DELIVER, cms.deliver, undo=cms.retract, timeout_seconds=30, retry=services, concurrency=DELIVERIES
            ),
        ),
        lifespan=cms.connected,
    )


pipeline = build()
