"""Measures how late the event loop wakes a sleeping task: the daemon's responsiveness under load."""

from __future__ import annotations

import anyio

from sagad.domain.runs import Lease
from sagad.metrics import Metrics


class LoopLag:
    """Sleeps a fixed interval again and again; whatever it oversleeps is time the loop was busy."""

    def __init__(self, metrics: Metrics, every_seconds: float = 0.1) -> None:
        self._lag = metrics.event_loop_lag
        self._every = every_seconds

    def abandon(self) -> list[Lease]:
        return []  # it holds no run

    async def run(self) -> None:
        while True:
            started = anyio.current_time()
            await anyio.sleep(self._every)
            self._lag.observe(max(0.0, anyio.current_time() - started - self._every))
