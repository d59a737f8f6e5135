"""A delivery receiver on loopback, for tests, benchmarks and ``sagad loadtest`` to deliver to.

``POST <any path>`` with a JSON object and an ``Idempotency-Key`` header accepts the package (201)
the first time; later POSTs of the key answer 200 with that first acceptance, and after a retraction
410. ``DELETE <any path>`` with the header retracts an accepted key (204, also when retracted
already; 404 for a key never accepted). ``GET /journal/summary`` tells what the journal adds up to.

A package is accepted when the answer is written, not when the request arrives: the added latency
is waited first, then the decision is made, written to the journal (flushed) and only then sent.
So a receiver stopped or killed during the wait has not accepted, and an answer written after the
client gave up (its timeout) is an acceptance all the same, recorded with ``client_gone``: a real
endpoint commits before it replies and cannot take it back, which is what the key is for (the
client's retry is recognised, 200, not accepted again).

Run as a process: ``python -m sagad.loadtest.receiver --journal FILE [--port 0] ...``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import anyio
import typer
from aiohttp import web

from sagad.errors import ConfigError
from sagad.loadtest.faults import Faults, Misbehaviour, destination_contains
from sagad.loadtest.journal import (
    ACCEPTED,
    RECOGNISED,
    RETRACTED,
    Journal,
    JournalEntry,
    JournalSummary,
    Method,
    read_journal,
)
from sagad.loadtest.serving import serve_until_stopped

__all__ = ["Faults", "JournalSummary", "Receiver", "read_journal"]

IDEMPOTENCY_KEY = "Idempotency-Key"
SUMMARY_PATH = "/journal/summary"

BAD_REQUEST = 400
NOT_FOUND = 404
GONE = 410
UNPROCESSABLE = 422

# How long a stop waits for answers in flight; those still waiting then are cancelled, never accepted.
# aiohttp waits this long, then as long again for the cancelled handlers to end.
SHUTDOWN_SECONDS = 1.0

Answer = tuple[int, dict[str, Any] | None]


class Receiver:
    """The receiver in this process: ``async with Receiver(journal) as r:`` serves on ``r.url``."""

    def __init__(
        self,
        journal: Path,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fsync: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._journal = Journal(journal, fsync=fsync)
        self._misbehaviour = Misbehaviour(faults or Faults())
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def summary(self) -> JournalSummary:
        return self._journal.deliveries.summary()

    async def __aenter__(self) -> Receiver:
        self._journal.open()
        try:
            app = web.Application()
            app.router.add_get(SUMMARY_PATH, self._serve_summary)
            app.router.add_post("/{path:.*}", self._receive_package)
            app.router.add_delete("/{path:.*}", self._retract_package)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
            await self._runner.setup()
            listener = _bind(self.host, self.port)
            self.port = listener.getsockname()[1]
            await web.SockSite(self._runner, listener).start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        with anyio.move_on_after(2 * SHUTDOWN_SECONDS + 1, shield=True):
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        self._journal.close()

    async def _serve_summary(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary().to_json())

    async def _receive_package(self, request: web.Request) -> web.Response:
        raw = await request.read()
        await anyio.sleep(self._misbehaviour.latency())
        at = time.time()
        key = request.headers.get(IDEMPOTENCY_KEY) or None
        package = _package(raw)
        # Nothing awaits from the decision to the journal line: two requests of one key cannot both accept.
        if key is None:
            answer: Answer = BAD_REQUEST, {"error": f"the {IDEMPOTENCY_KEY} header is missing"}
        elif isinstance(package, str):
            answer = BAD_REQUEST, {"error": package}
        else:
            answer = self._decide_post(key, package, at)
        return await self._answer(request, at, "POST", key, answer)

    async def _retract_package(self, request: web.Request) -> web.Response:
        await anyio.sleep(self._misbehaviour.latency())
        at = time.time()
        key = request.headers.get(IDEMPOTENCY_KEY) or None
        if key is None:
            answer: Answer = BAD_REQUEST, {"error": f"the {IDEMPOTENCY_KEY} header is missing"}
        else:
            answer = self._decide_delete(key)
        return await self._answer(request, at, "DELETE", key, answer)

    def _decide_post(self, key: str, body: dict[str, Any], at: float) -> Answer:
        deliveries = self._journal.deliveries
        transient = self._misbehaviour.transient_status()
        if transient is not None:
            return transient, {"error": "the receiver is failing on purpose; try again"}
        if key in deliveries.retracted:
            return GONE, {"key": key, "status": "retracted"}
        if key in deliveries.accepted_at:
            return RECOGNISED, {"key": key, "status": "accepted", "accepted_at": deliveries.accepted_at[key]}
        reason = self._misbehaviour.rejection(key, body)
        if reason is not None:
            return UNPROCESSABLE, {"key": key, "status": "rejected", "reason": reason}
        return ACCEPTED, {"key": key, "status": "accepted", "accepted_at": at}

    def _decide_delete(self, key: str) -> Answer:
        transient = self._misbehaviour.transient_status()
        if transient is not None:
            return transient, {"error": "the receiver is failing on purpose; try again"}
        if key in self._journal.deliveries.accepted_at:
            return RETRACTED, None
        return NOT_FOUND, {"key": key, "status": "unknown"}

    async def _answer(
        self, request: web.Request, at: float, method: Method, key: str | None, answer: Answer
    ) -> web.Response:
        """Journal the answer, then send it: the journal line is the acceptance."""
        status, payload = answer
        transport = request.transport
        entry = JournalEntry(
            at=at,
            method=method,
            path=request.path,
            key=key,
            status=status,
            client_gone=transport is None or transport.is_closing(),
        )
        self._journal.record(entry)
        if self._journal.fsync:
            await anyio.to_thread.run_sync(self._journal.sync)
        if payload is None:
            return web.Response(status=status)
        return web.json_response(payload, status=status)


def _package(raw: bytes) -> dict[str, Any] | str:
    """The body as a JSON object, or why it is not one."""
    try:
        body = json.loads(raw)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        return f"the body is not JSON: {error}"
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    return body


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, proto)
    try:
        # A restart on the same port must not wait for the old process's connections to leave TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except BaseException:
        listener.close()
        raise
    return listener


def serve_command(
    journal: Annotated[Path, typer.Option(help="The journal file (JSON lines); replayed first when it exists.")],
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port; 0 picks a free one (the printed line tells which).")] = 0,
    latency_median_ms: Annotated[float, typer.Option(help="Median latency added to every answer.")] = 0.0,
    latency_p99_ms: Annotated[
        float | None, typer.Option(help="99th percentile of the added latency (lognormal); default: the median.")
    ] = None,
    fail_5xx: Annotated[float, typer.Option("--fail-5xx", help="Fraction of requests answered 503.")] = 0.0,
    fail_429: Annotated[float, typer.Option("--fail-429", help="Fraction of requests answered 429.")] = 0.0,
    reject: Annotated[float, typer.Option(help="Fraction of keys whose packages are rejected (422).")] = 0.0,
    reject_matching: Annotated[
        str | None, typer.Option(help="Reject (422) packages whose 'destination' contains this text.")
    ] = None,
    reject_key: Annotated[list[str] | None, typer.Option(help="Reject (422) this key's package; repeatable.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault draws, to repeat a run.")] = None,
    fsync: Annotated[bool, typer.Option(help="fsync the journal before every answer.")] = False,
) -> None:
    """Receive delivery packages over HTTP until SIGTERM or SIGINT."""
    try:
        faults = Faults(
            latency_median_ms=latency_median_ms,
            latency_p99_ms=latency_p99_ms,
            fail_5xx=fail_5xx,
            fail_429=fail_429,
            reject=reject,
            reject_keys=frozenset(reject_key or ()),
            reject_body=destination_contains(reject_matching) if reject_matching else None,
            seed=seed,
        )
        receiver = Receiver(journal, faults, host=host, port=port, fsync=fsync)
        anyio.run(serve_until_stopped, receiver, lambda r: f"receiver listening on {r.url}")
    except (ConfigError, OSError) as error:
        print(f"receiver: {error}", file=sys.stderr)
        raise typer.Exit(2 if isinstance(error, ConfigError) else 1) from None


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve_command)
    app(prog_name="python -m sagad.loadtest.receiver")


if __name__ == "__main__":
    main()
