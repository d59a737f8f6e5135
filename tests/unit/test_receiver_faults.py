"""The receiver's fault draws: the latency distribution, the fractions, and the options they refuse."""

from __future__ import annotations

import statistics

import pytest

from sagad.errors import ConfigError
from sagad.loadtest.faults import Faults, Misbehaviour


def test_latency_is_lognormal_with_the_asked_median_and_p99() -> None:
    draws = Misbehaviour(Faults(latency_median_ms=20, latency_p99_ms=200, seed=5))
    latencies = sorted(draws.latency() for _ in range(20_000))

    assert statistics.median(latencies) == pytest.approx(0.020, rel=0.05)
    assert latencies[int(0.99 * len(latencies))] == pytest.approx(0.200, rel=0.15)


def test_latency_without_a_p99_is_the_median_every_time() -> None:
    draws = Misbehaviour(Faults(latency_median_ms=30))
    assert {draws.latency() for _ in range(100)} == {0.030}
    assert Misbehaviour(Faults()).latency() == 0.0


def test_the_same_seed_draws_the_same_faults() -> None:
    faults = Faults(latency_median_ms=10, latency_p99_ms=50, fail_5xx=0.3, fail_429=0.3, seed=9)
    first, second = Misbehaviour(faults), Misbehaviour(faults)
    assert [(first.latency(), first.transient_status()) for _ in range(50)] == [
        (second.latency(), second.transient_status()) for _ in range(50)
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"fail_5xx": 1.5},
        {"fail_429": -0.1},
        {"reject": 2.0},
        {"fail_5xx": 0.6, "fail_429": 0.6},
        {"latency_median_ms": -1.0},
        {"latency_median_ms": 50.0, "latency_p99_ms": 10.0},
        {"latency_p99_ms": 10.0},
    ],
)
def test_unusable_faults_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Faults(**options)  # type: ignore[arg-type]
