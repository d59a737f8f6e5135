"""How a receiver misbehaves when asked to: added latency, transient failures, permanent rejects."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sagad.errors import ConfigError

BodyPredicate = Callable[[Mapping[str, Any]], bool]

SERVICE_UNAVAILABLE = 503
TOO_MANY_REQUESTS = 429

# The 99th percentile of the standard normal: a lognormal's p99 is exp(mu + Z_99 * sigma).
Z_99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class Faults:
    """What to do wrong, and how often. Fractions are of requests, except ``reject``: of keys.

    ``reject`` picks keys by a hash of the key (and seed), so that a package the receiver rejects is
    rejected on every retry, as a real target rejects a package for what it is.
    """

    latency_median_ms: float = 0.0
    latency_p99_ms: float | None = None  # None: every request waits the median
    fail_5xx: float = 0.0
    fail_429: float = 0.0
    reject: float = 0.0
    reject_keys: frozenset[str] = frozenset()
    reject_body: BodyPredicate | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_5xx", "fail_429", "reject"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a fraction between 0 and 1, not {getattr(self, name)}")
        if self.fail_5xx + self.fail_429 > 1.0:
            raise ConfigError("fail_5xx and fail_429 together cannot exceed 1")
        if self.latency_median_ms < 0:
            raise ConfigError("the latency median cannot be negative")
        if self.latency_p99_ms is not None and self.latency_p99_ms < self.latency_median_ms:
            raise ConfigError("the latency p99 cannot be below its median")
        if self.latency_p99_ms and not self.latency_median_ms:
            raise ConfigError("a latency p99 needs a median above 0")


def destination_contains(text: str) -> BodyPredicate:
    """A body predicate: the package's top-level ``destination`` contains ``text``."""

    def matches(body: Mapping[str, Any]) -> bool:
        destination = body.get("destination")
        return isinstance(destination, str) and text in destination

    return matches


class Misbehaviour:
    """Draws each request's fate from ``Faults`` with a generator of its own (seeded: repeatable)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._median = faults.latency_median_ms / 1000
        p99 = (faults.latency_p99_ms or faults.latency_median_ms) / 1000
        self._sigma = math.log(p99 / self._median) / Z_99 if self._median > 0 else 0.0

    def latency(self) -> float:
        """Seconds to wait before answering: lognormal with the configured median and p99."""
        if self._sigma == 0.0:
            return self._median
        return self._random.lognormvariate(math.log(self._median), self._sigma)

    def transient_status(self) -> int | None:
        """503 or 429 when this request is to fail transiently, else None."""
        draw = self._random.random()
        if draw < self.faults.fail_5xx:
            return SERVICE_UNAVAILABLE
        if draw < self.faults.fail_5xx + self.faults.fail_429:
            return TOO_MANY_REQUESTS
        return None

    def rejection(self, key: str, body: Mapping[str, Any]) -> str | None:
        """Why the package of ``key`` is rejected for good, or None when it is not."""
        if key in self.faults.reject_keys:
            return f"key {key!r} is on the reject list"
        if self.faults.reject_body is not None and self.faults.reject_body(body):
            return "the package matches the reject rule"
        if self.faults.reject and _key_fraction(key, self.faults.seed) < self.faults.reject:
            return "the package is among the fraction rejected"
        return None


def _key_fraction(key: str, seed: int | None) -> float:
    """A number in [0, 1) fixed by the key and seed."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
