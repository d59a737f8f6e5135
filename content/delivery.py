"""Step 5: package what QC passed for its target; POST it when the destination is an HTTP endpoint.

Each target takes packages up to a size in words. An HTTP delivery carries an ``Idempotency-Key``
derived from the run's package, so a retried or reclaimed delivery is recognised by the receiver;
4xx answers fail the run, 408, 429, 5xx and timeouts are retried. Its undo retracts the package
(``DELETE`` with the same key) when a run is compensated after a delivery may have happened.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict, cast

import aiohttp
import orjson
from yarl import URL

from sagad.content.brief import BriefData
from sagad.content.draft import Draft
from sagad.content.qc import Verdict
from sagad.domain.pipeline import StepContext, StepResult, UndoContext
from sagad.domain.rows import Rows, row_key
from sagad.domain.steps import Step
from sagad.errors import StepFailed, TransientStepError

WORD_LIMITS = {"cms": 20_000, "email": 2_000, "social": 1_000}
"""The largest package (the brief's word limit times its channels) each target accepts."""

_RETRIED_STATUSES = frozenset({408, 425, 429})


class Receipt(TypedDict):
    """The step's output."""

    package_id: str
    delivered_to: str | None
    """The endpoint that accepted the package, when it went over HTTP."""


def package_words(brief: BriefData) -> int:
    return brief["word_limit"] * len(brief["channels"])


def idempotency_key(run_id: uuid.UUID) -> str:
    """The key a receiver recognises a run's package by, on every retry and after any reclaim."""
    return f"sagad-{row_key(run_id, 'package')}"


def is_endpoint(destination: str) -> bool:
    return destination.startswith(("http://", "https://"))


def package(run_id: uuid.UUID, brief: BriefData, draft: Draft, verdict: Verdict) -> dict[str, Any]:
    """The package a target gets, or StepFailed when it is over the target's size."""
    target, destination = brief["delivery"]["target"], brief["delivery"]["destination"]
    words = package_words(brief)
    if words > WORD_LIMITS[target]:
        raise StepFailed(
            f"delivery target {target!r} rejected the package: {words} words, over its limit of {WORD_LIMITS[target]}"
        )
    return {
        "run_id": str(run_id),
        "package_id": str(row_key(run_id, "package")),
        "target": target,
        "destination": destination,
        "total_words": words,
        "qc_score": verdict["score"],
        "title": draft["title"],
        "artifacts": draft["assets"],
    }


def rows(run_id: uuid.UUID, sent: dict[str, Any]) -> Rows:
    package_id = row_key(run_id, "package")
    return {
        "delivery_packages": [
            {
                "run_id": run_id,
                "id": package_id,
                "draft_id": row_key(run_id, "draft"),
                "target": sent["target"],
                "destination": sent["destination"],
                "total_words": sent["total_words"],
            }
        ],
        "delivery_artifacts": [
            {
                "run_id": run_id,
                "id": row_key(run_id, f"artifact/{asset['channel']}/{asset['kind']}"),
                "package_id": package_id,
                "asset_id": row_key(run_id, f"asset/{asset['channel']}/{asset['kind']}"),
                "uri": f"{sent['target']}://{sent['destination']}/{asset['channel']}/{asset['kind']}",
            }
            for asset in sent["artifacts"]
        ],
    }


class Delivery:
    """The deliver step, with the HTTP session its deliveries share (open while the daemon runs)."""

    def __init__(self, allowed_hosts: frozenset[str] = frozenset(), timeout_seconds: float = 10.0) -> None:
        self.allowed_hosts = allowed_hosts
        """``host`` or ``host:port`` entries a brief may deliver to; none: no HTTP delivery at all."""
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def open(self, connections: int = 100) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )
        async with session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    async def __call__(self, ctx: StepContext) -> StepResult:
        brief = cast(BriefData, ctx.brief)
        draft = cast(Draft, ctx.outputs[Step.GENERATE_DRAFT])
        verdict = cast(Verdict, ctx.outputs[Step.QC_EVALUATE])
        sent = package(ctx.run_id, brief, draft, verdict)
        destination = sent["destination"]
        delivered_to = None
        if is_endpoint(destination):
            await self._send("POST", destination, ctx.run_id, sent)
            delivered_to = destination
        receipt: Receipt = {"package_id": sent["package_id"], "delivered_to": delivered_to}
        return StepResult(rows(ctx.run_id, sent), receipt)

    async def undo(self, ctx: UndoContext) -> None:
        """Retract the package from an HTTP endpoint; nothing to take back from the other targets."""
        destination = cast(BriefData, ctx.brief)["delivery"]["destination"]
        if is_endpoint(destination):
            await self._send("DELETE", destination, ctx.run_id, None)

    async def _send(self, method: str, url: str, run_id: uuid.UUID, body: dict[str, Any] | None) -> None:
        self._check_allowed(url)
        if self._session is None:
            raise RuntimeError("the delivery session is not open: run the pipeline inside its lifespan")
        headers = {"Idempotency-Key": idempotency_key(run_id)}
        try:
            async with self._session.request(method, url, json=body, headers=headers, allow_redirects=False) as answer:
                status, reason = answer.status, answer.reason
                await answer.read()
        except TimeoutError:
            raise TransientStepError(f"{method} {url} timed out after {self._timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise TransientStepError(f"{method} {url} failed: {type(error).__name__}: {error}") from None
        if status < 300 or (method == "DELETE" and status == 404):
            return
        message = f"{method} {url} answered {status} {reason}"
        if status in _RETRIED_STATUSES or status >= 500:
            raise TransientStepError(message)
        raise StepFailed(f"delivery endpoint refused the package: {message}")

    def _check_allowed(self, url: str) -> None:
        try:
            parsed = URL(url)
            host = parsed.host
        except ValueError as error:
            raise StepFailed(f"delivery destination {url!r} is not a URL: {error}") from None
        if not parsed.absolute or host is None:
            raise StepFailed(f"delivery destination {url!r} is not a URL with a host")
        port = parsed.explicit_port
        hostport = host if port is None else f"{host}:{port}"
        if host not in self.allowed_hosts and hostport not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts)) or "none"
            raise StepFailed(f"delivery to {hostport} is not allowed (allowed: {allowed}; see --delivery-hosts)")
