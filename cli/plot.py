"""A picture of a load test: runs finished per second, and their latency, over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt

from sagad.cli.report import percentiles
from sagad.store.records import RunEnd


def draw(finished: list[RunEnd], path: Path) -> None:
    if not finished:
        return
    start = min(f.submitted_at for f in finished)
    seconds: dict[int, list[float]] = {}
    for f in finished:
        seconds.setdefault(int(f.finished_at - start), []).append(f.latency)
    xs = sorted(seconds)
    figure, (throughput, latency) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    throughput.bar(xs, [len(seconds[x]) for x in xs], width=1.0, color="#4c72b0")
    throughput.set_ylabel("runs finished / s")
    for quantile, color in (("p50", "#55a868"), ("p99", "#c44e52")):
        latency.plot(xs, [percentiles(seconds[x])[quantile] for x in xs], label=quantile, color=color)
    latency.set_ylabel("end-to-end latency (ms)")
    latency.set_xlabel("seconds since the first submission")
    latency.legend()
    figure.suptitle(f"sagad load test: {len(finished)} runs")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
