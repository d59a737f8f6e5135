"""A database far away: a TCP proxy on loopback that delays everything it carries, both ways.

    python -m sagad.loadtest.distance --upstream 127.0.0.1:5432 --delay-ms 25 [--port 0]

prints ``delay proxy listening on HOST:PORT``; point ``--database-url`` at that address. Every chunk is
delivered ``--delay-ms`` after it arrived, in order, so a round trip costs twice that; throughput is not
limited. Tests and benchmarks use it in-process: ``async with DelayProxy(host, port, 0.025) as proxy``.
"""

from __future__ import annotations

import math
import sys
from types import TracebackType
from typing import Annotated

import anyio
import typer
from anyio.abc import ByteStream, Listener, SocketAttribute, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream

from sagad.loadtest.serving import serve_until_stopped


class DelayProxy:
    """Listens on loopback and carries each connection to ``host:port``, ``delay_seconds`` late each way."""

    def __init__(self, host: str, port: int, delay_seconds: float, *, listen_port: int = 0) -> None:
        if delay_seconds < 0:
            raise ValueError("the delay cannot be negative")
        self.upstream = (host, port)
        self.delay = delay_seconds
        self.port = listen_port
        self._listener: Listener[SocketStream] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> DelayProxy:
        listener = self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.extra(SocketAttribute.local_port)
        tasks = self._tasks = anyio.create_task_group()
        await tasks.__aenter__()
        tasks.start_soon(listener.serve, self._carry_connection)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
            await self._tasks.__aexit__(exc_type, exc, tb)
        if self._listener is not None:
            await self._listener.aclose()

    async def _carry_connection(self, client: SocketStream) -> None:
        async with client:
            try:
                server = await anyio.connect_tcp(*self.upstream)
            except OSError:
                return
            async with server, anyio.create_task_group() as both_ways:
                both_ways.start_soon(self._carry, client, server, both_ways.cancel_scope)
                both_ways.start_soon(self._carry, server, client, both_ways.cancel_scope)

    async def _carry(self, source: ByteStream, sink: ByteStream, connection: anyio.CancelScope) -> None:
        """Everything ``source`` sends reaches ``sink`` ``delay`` later; when either side goes, so does the link."""
        due, ready = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._deliver, ready, sink)
                async with due:
                    async for chunk in source:
                        due.send_nowait((anyio.current_time() + self.delay, chunk))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        connection.cancel()

    @staticmethod
    async def _deliver(ready: MemoryObjectReceiveStream[tuple[float, bytes]], sink: ByteStream) -> None:
        async with ready:
            async for at, chunk in ready:
                wait = at - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                await sink.send(chunk)


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"must be HOST:PORT, got {value!r}")
    return host, int(port)


def serve_command(
    upstream: Annotated[str, typer.Option(help="HOST:PORT of the server to carry connections to.")],
    delay_ms: Annotated[float, typer.Option(min=0, help="Milliseconds added each way (a round trip: twice).")],
    port: Annotated[int, typer.Option(help="The port to listen on; 0 picks a free one.")] = 0,
) -> None:
    """Carry connections to UPSTREAM, each chunk DELAY_MS late, until SIGTERM or SIGINT."""
    host, upstream_port = _address(upstream)
    try:
        proxy = DelayProxy(host, upstream_port, delay_ms / 1000, listen_port=port)
        anyio.run(serve_until_stopped, proxy, lambda p: f"delay proxy listening on 127.0.0.1:{p.port}")
    except OSError as error:
        print(f"delay proxy: {error}", file=sys.stderr)
        raise typer.Exit(1) from None


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve_command)
    app(prog_name="python -m sagad.loadtest.distance")


if __name__ == "__main__":
    main()
