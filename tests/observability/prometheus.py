"""A real Prometheus in a child process, scraping one daemon and evaluating the shipped alert rules."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

ALERTS = Path(__file__).resolve().parents[2] / "grafana" / "alerts.yml"

Series = dict[str, Any]


class PrometheusError(Exception):
    """Prometheus refused a request; the message is its own explanation."""


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    async def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a GET on ``/api/v1/<path>``, or PrometheusError with the reason it gives."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        payload = await anyio.to_thread.run_sync(_get_json, url)
        if payload.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]

    async def query(self, expr: str) -> list[Series]:
        """An instant query now: one ``{"metric": labels, "value": [time, "value"]}`` per series."""
        data = await self.api("query", query=expr)
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    async def wait_for(self, expr: str, accept: Callable[[list[Series]], bool], seconds: float = 20) -> list[Series]:
        """Query ``expr`` until ``accept`` takes its result (one scrape per second), within a deadline."""
        result: list[Series] = []
        try:
            with anyio.fail_after(seconds):
                while True:
                    result = await self.query(expr)
                    if accept(result):
                        return result
                    await anyio.sleep(0.25)
        except TimeoutError:
            raise AssertionError(f"after {seconds}s, {expr} still gives {result}") from None


def values(result: list[Series]) -> list[float]:
    """The sample values of an instant query's result."""
    return [float(series["value"][1]) for series in result]


def value(result: list[Series]) -> float:
    """The value of a result that must hold exactly one series."""
    assert len(result) == 1, f"expected one series, got {result}"
    return values(result)[0]


@asynccontextmanager
async def running_prometheus(target: str, workdir: Path, seconds: float = 30) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``target`` (``host:port``) as job ``sagad`` every second, until the block ends."""
    process, prometheus = _start(target, workdir)
    try:
        await _wait_ready(prometheus, process, seconds)
        yield prometheus
    finally:
        _stop(process)


def _start(target: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not on PATH: install Debian's prometheus package (`make tools` does, as CI)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(target)))
    port = _free_port()
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
    return process, Prometheus(f"http://127.0.0.1:{port}", log)


def _config(target: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "sagad", "static_configs": [{"targets": [target]}]}],
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        # A bad query is a 400 or 422 whose JSON body says what is wrong with it.
        body = error.read()
    return dict(json.loads(body))


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return int(response.status) == 200
    except OSError:  # refused while starting, 503 while replaying the WAL
        return False


async def _wait_ready(prometheus: Prometheus, process: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        with anyio.fail_after(seconds):
            while True:
                if await anyio.to_thread.run_sync(_is_ready, prometheus.url):
                    return
                assert process.poll() is None, f"prometheus exited:\n{prometheus.log.read_text()}"
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"prometheus not ready after {seconds}s:\n{prometheus.log.read_text()}") from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
