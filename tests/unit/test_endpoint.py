"""The daemon's HTTP endpoint: metrics, liveness and readiness, served from a thread on a real socket."""

from __future__ import annotations

import inspect
import urllib.error
import urllib.request
from collections.abc import Iterator

import anyio
import pytest

from sagad.cli.daemon import daemon_command, parse_addr
from sagad.endpoint import STALE_AFTER_SECONDS, Endpoint, Health, announced, announcement, answer
from sagad.metrics import Metrics


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(clock=clock)


@pytest.fixture
def endpoint(health: Health) -> Iterator[str]:
    metrics = Metrics()
    metrics.claims.inc(3)
    with Endpoint(health, metrics.registry, "127.0.0.1", 0) as served:
        yield served.url


def test_metrics_are_the_daemon_registry_in_prometheus_exposition(endpoint: str) -> None:
    status, body = get(f"{endpoint}/metrics")
    assert status == 200
    assert "sagad_claims_total 3.0" in body.splitlines()


def test_readyz_is_503_until_a_claim_completes_then_200(endpoint: str, health: Health) -> None:
    assert get(f"{endpoint}/readyz") == (503, "starting: no claim has completed yet\n")
    health.claim_succeeded()
    assert get(f"{endpoint}/readyz") == (200, "ok\n")


def test_readyz_is_503_while_claims_fail_and_200_once_one_goes_through(endpoint: str, health: Health) -> None:
    health.claim_succeeded()
    health.claim_failed()
    status, body = get(f"{endpoint}/readyz")
    assert (status, body.split(":")[0]) == (503, "claims are failing")
    health.claim_succeeded()
    assert answer(f"{endpoint}/readyz") == 200


def test_readyz_is_503_for_good_once_the_daemon_drains(endpoint: str, health: Health) -> None:
    health.claim_succeeded()
    health.draining()
    assert get(f"{endpoint}/readyz") == (503, "stopping: draining in-flight runs\n")
    health.claim_succeeded()  # a claim that was already under way when the stop began
    health.claim_failed()
    assert answer(f"{endpoint}/readyz") == 503
    assert answer(f"{endpoint}/healthz") == 200, "a draining daemon is still alive"


def test_healthz_is_200_while_the_loop_beats_and_503_once_it_is_silent(
    endpoint: str, health: Health, clock: Clock
) -> None:
    health.claim_succeeded()
    assert get(f"{endpoint}/healthz") == (200, "ok\n")
    clock.now += STALE_AFTER_SECONDS + 1
    assert get(f"{endpoint}/healthz") == (503, f"event loop silent for {STALE_AFTER_SECONDS + 1:.1f}s\n")
    assert answer(f"{endpoint}/readyz") == 503, "a stalled daemon takes no work either"
    health.beat()
    assert answer(f"{endpoint}/healthz") == answer(f"{endpoint}/readyz") == 200


@pytest.mark.parametrize("path", ["/", "/health", "/readyz/", "/metrics/x", "/favicon.ico"])
def test_unknown_paths_are_404(endpoint: str, path: str) -> None:
    status, body = get(f"{endpoint}{path}")
    assert status == 404
    assert "/metrics, /healthz and /readyz" in body


def test_the_default_address_binds_loopback() -> None:
    default = inspect.signature(daemon_command).parameters["metrics_addr"].default
    host, _ = parse_addr(default)
    with Endpoint(Health(), Metrics().registry, host, 0) as served:
        assert served.url.startswith("http://127.0.0.1:")


def test_an_ipv6_endpoint_is_announced_with_brackets_and_found_in_a_log() -> None:
    try:
        served = Endpoint(Health(), Metrics().registry, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with served:
        assert served.url.startswith("http://[::1]:")
        log = f"2025 INFO sagad: {announcement(served.url)}\n2025 INFO sagad: daemon x running\n"
        assert announced(log) == served.url
        assert answer(f"{served.url}/healthz") == 200


def test_the_last_announcement_of_a_log_is_the_endpoint() -> None:
    log = f"{announcement('http://127.0.0.1:1')}\n{announcement('http://127.0.0.1:2')}\n"
    assert announced(log) == "http://127.0.0.1:2"
    assert announced("daemon x running") is None


def test_nothing_listening_answers_none() -> None:
    with Endpoint(Health(), Metrics().registry, "127.0.0.1", 0) as served:
        url = served.url
    assert answer(f"{url}/healthz", timeout=1) is None


class _ObservedBeats(Health):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.beaten = anyio.Event()

    def beat(self) -> None:
        super().beat()
        self.beaten.set()


@pytest.mark.anyio
async def test_the_heartbeat_task_keeps_a_running_loop_healthy(clock: Clock) -> None:
    health = _ObservedBeats(clock)
    clock.now += STALE_AFTER_SECONDS + 1
    assert health.unhealthy() is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(health.keep_beating, 0.01)
        with anyio.fail_after(5):
            await health.beaten.wait()
        assert health.unhealthy() is None
        tg.cancel_scope.cancel()


def test_readyz_says_when_intake_is_paused_and_stays_ready(health: Health) -> None:
    metrics = Metrics()
    with Endpoint(health, metrics.registry, "127.0.0.1", 0) as served:
        health.claim_succeeded()
        metrics.intake_paused.set(1)
        assert get(f"{served.url}/readyz") == (200, "ok: intake paused (sagad intake resume)\n")
        metrics.intake_paused.set(0)
        assert get(f"{served.url}/readyz") == (200, "ok\n")
