"""The daemon's HTTP endpoint: Prometheus metrics, liveness (``/healthz``) and readiness (``/readyz``).

Served from threads, as ``prometheus_client.start_http_server`` serves metrics, so that a stalled
event loop still gets an answer (``/healthz`` 503) instead of a hung probe.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import anyio
from prometheus_client import CollectorRegistry, make_wsgi_app

BEAT_SECONDS = 0.5
STALE_AFTER_SECONDS = 5.0
"""Silence of the event loop after which the daemon is reported unhealthy (GC pauses are ~70 ms)."""

_ANNOUNCED = re.compile(r"metrics on (http://\S+?)/metrics")


class Health:
    """What the probes answer: whether the event loop beats, and whether the daemon takes work.

    Ready once a claim statement has completed; not ready again while claims fail and for good
    once the daemon stops. Written on the event loop, read by the endpoint's threads.
    """

    def __init__(
        self, *, stale_after_seconds: float = STALE_AFTER_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._stale_after = stale_after_seconds
        self._last_beat = clock()
        self._stopping = False
        self._not_ready: str | None = "starting: no claim has completed yet"

    def beat(self) -> None:
        self._last_beat = self._clock()

    async def keep_beating(self, every_seconds: float = BEAT_SECONDS) -> None:
        """Beat for as long as the event loop runs this task."""
        while True:
            self.beat()
            await anyio.sleep(every_seconds)

    def claim_succeeded(self) -> None:
        if not self._stopping:
            self._not_ready = None

    def claim_failed(self) -> None:
        if not self._stopping:
            self._not_ready = "claims are failing: the database is unreachable or refuses them"

    def draining(self) -> None:
        self._stopping = True
        self._not_ready = "stopping: draining in-flight runs"

    def unhealthy(self) -> str | None:
        """Why the daemon is not healthy, or None."""
        silent = self._clock() - self._last_beat
        return f"event loop silent for {silent:.1f}s" if silent > self._stale_after else None

    def unready(self) -> str | None:
        """Why the daemon does not take work now, or None."""
        return self.unhealthy() or self._not_ready


def _text(start_response: StartResponse, status: str, body: str) -> Iterable[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
    return [body.encode() + b"\n"]


def application(health: Health, registry: CollectorRegistry) -> WSGIApplication:
    """``/metrics`` as prometheus-client serves it, ``/healthz`` and ``/readyz`` from ``health``, else 404."""
    metrics = make_wsgi_app(registry)

    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            served: Iterable[bytes] = metrics(environ, start_response)
            return served
        if path in ("/healthz", "/readyz"):
            problem = health.unhealthy() if path == "/healthz" else health.unready()
            if problem:
                return _text(start_response, "503 Service Unavailable", problem)
            # A paused daemon is still ready (it finishes its runs); the body says why it claims nothing new.
            paused = path == "/readyz" and registry.get_sample_value("sagad_intake_paused")
            return _text(start_response, "200 OK", "ok: intake paused (sagad intake resume)" if paused else "ok")
        return _text(start_response, "404 Not Found", "not found: /metrics, /healthz and /readyz are served")

    return route


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A request line per scrape and probe would drown the daemon's log."""


class Endpoint:
    """The endpoint, bound when made (OSError if it cannot be) and served while the ``with`` block runs."""

    def __init__(self, health: Health, registry: CollectorRegistry, host: str, port: int) -> None:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

        class Server(_ThreadingServer):
            address_family = family  # IPv4 or IPv6, as the host is written

        self._server = make_server(host, port, application(health, registry), Server, _QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sagad-endpoint", daemon=True)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as bound (port 0 asks the system for a free port)."""
        host, port = self._server.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def announcement(url: str) -> str:
    """The log line that tells where the endpoint of ``url`` listens (how to find a port 0 bound)."""
    return f"metrics on {url}/metrics (health on /healthz, readiness on /readyz)"


def announced(log: str) -> str | None:
    """The endpoint's ``http://HOST:PORT`` that a daemon's log announced last, if any."""
    found = _ANNOUNCED.findall(log)
    return str(found[-1]) if found else None


def answer(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status a GET of ``url`` gets, or None when nothing answers (blocking)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
