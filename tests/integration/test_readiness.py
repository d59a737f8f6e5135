"""A daemon's /readyz follows its claimer and its stop: 503 before the first claim, while claims fail, and
once it drains; 200 in between. /healthz stays 200 throughout."""

from __future__ import annotations

import urllib.error
import urllib.request

import anyio
import pytest

from sagad.domain.runs import ClaimedRun, WorkerId
from sagad.endpoint import Endpoint, Health
from sagad.errors import TransientDatabaseError
from sagad.metrics import Metrics
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.supervisor import Settings, Supervisor

pytestmark = pytest.mark.anyio


class _GatedClaims(RunStore):
    """The real store, except that claims wait for the test to open the gate, and fail while it says so."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.gate = anyio.Event()
        self.unreachable = False

    async def claim(self, worker: WorkerId, limit: int, lease_seconds: float) -> list[ClaimedRun]:
        await self.gate.wait()
        if self.unreachable:
            raise TransientDatabaseError("ConnectionRefusedError: the test cut the database off")
        return await super().claim(worker, limit, lease_seconds)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode().strip()


async def _until(url: str, status: int, seconds: float = 10) -> str:
    """Wait until ``url`` answers ``status``; its body."""
    with anyio.fail_after(seconds):
        while True:
            answered, body = await anyio.to_thread.run_sync(_get, url)
            if answered == status:
                return body
            await anyio.sleep(0.02)


async def test_readyz_follows_the_first_claim_failing_claims_and_the_stop(db: Database) -> None:
    health = Health()
    metrics = Metrics()
    settings = Settings(worker_id=WorkerId("probed"), poll_seconds=0.05)
    supervisor = Supervisor(db, settings, metrics, readiness=health)
    claims = supervisor.runs = _GatedClaims(db)
    stop = anyio.Event()

    with Endpoint(health, metrics.registry, "127.0.0.1", 0) as endpoint:
        readyz, healthz = f"{endpoint.url}/readyz", f"{endpoint.url}/healthz"
        async with anyio.create_task_group() as tg:
            tg.start_soon(health.keep_beating, 0.05)
            await tg.start(supervisor.run, stop)
            assert await anyio.to_thread.run_sync(_get, readyz) == (503, "starting: no claim has completed yet")
            assert (await anyio.to_thread.run_sync(_get, healthz))[0] == 200

            claims.gate.set()
            assert await _until(readyz, 200) == "ok"

            claims.unreachable = True
            assert (await _until(readyz, 503)).startswith("claims are failing")
            assert (await anyio.to_thread.run_sync(_get, healthz))[0] == 200

            claims.unreachable = False
            await _until(readyz, 200)

            stop.set()
            assert await _until(readyz, 503) == "stopping: draining in-flight runs"
            tg.cancel_scope.cancel()
