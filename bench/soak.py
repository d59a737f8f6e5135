"""Memory soak: one daemon process, N runs in waves; its RSS after each wave.

    python -m bench.soak --runs 100000 --database-url URL

Prints the daemon's resident memory after every 10,000 runs, and the change from run 10,000 to
the last (the target: flat within 10%).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

from sagad.cli.load import Mix
from sagad.content.samples import sample_brief
from sagad.store.db import Database
from sagad.store.runs import RunStore

WAVE = 10_000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _wait_until_idle(store: RunStore) -> None:
    active = ("pending", "running", "compensating")
    while True:
        counts = await store.count_by_status()
        if not any(counts.get(status) for status in active):
            return
        await anyio.sleep(0.5)


async def soak(url: str, runs: int) -> None:
    env = {**os.environ, "SAGAD_DATABASE_URL": url}
    command = [sys.executable, "-m", "sagad", "run", "--worker-id", "soak", "--metrics-addr", "127.0.0.1:0"]
    daemon = await anyio.open_process(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = await Database.connect(url)
    store = RunStore(db)
    outcomes = Mix.of(runs, 0.04, 0.03, 0.03).shuffled()
    samples: list[tuple[int, float]] = []
    started = time.monotonic()
    try:
        for wave in range(0, runs, WAVE):
            for start in range(wave, min(wave + WAVE, runs), 500):
                chunk = outcomes[start : start + 500]
                await store.submit_many([(sample_brief(o, start + n), None) for n, o in enumerate(chunk)])
            await _wait_until_idle(store)
            samples.append((min(wave + WAVE, runs), rss_mib(daemon.pid)))
            print(f"after run {samples[-1][0]:>7,}: daemon RSS {samples[-1][1]:7.1f} MiB "
                  f"({time.monotonic() - started:5.0f} s)", flush=True)  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await daemon.wait()
        await db.close()
    first, last = samples[0][1], samples[-1][1]
    print(f"RSS from run {samples[0][0]:,} to run {samples[-1][0]:,}: {first:.1f} -> {last:.1f} MiB "
          f"({100 * (last - first) / first:+.1f}%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    anyio.run(soak, args.database_url, args.runs)


if __name__ == "__main__":
    main()
