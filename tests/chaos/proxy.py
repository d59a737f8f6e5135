"""A TCP proxy in front of PostgreSQL that drops every open connection when told, refuses new ones, or
stops forwarding (a network partition: both sides stay open and hear nothing)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskStatus
from sqlalchemy.engine import make_url

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the server listens (TCP only: see ``server.ThrowawayServer`` for why not a unix socket)."""

    host: str
    port: int

    @classmethod
    def of(cls, database_url: str) -> Upstream:
        parsed = make_url(database_url)
        assert parsed.host and not parsed.host.startswith("/") and "host" not in parsed.query, "a TCP URL"
        return cls(parsed.host, parsed.port or 5432)

    async def connect(self) -> SocketStream:
        return await anyio.connect_tcp(self.host, self.port)


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, client: SocketStream, upstream: ByteStream) -> None:
        self.client = client
        self.upstream = upstream

    async def close(self, *, reset: bool = False) -> None:
        """Close both ends; a pump waiting on either wakes up and ends."""
        if reset:
            with contextlib.suppress(OSError):
                self.client.extra(SocketAttribute.raw_socket).setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE
                )
        await self.upstream.aclose()
        await self.client.aclose()


async def _pump(source: ByteStream, sink: ByteStream, link: _Link, flowing: Callable[[], Awaitable[None]]) -> None:
    try:
        async for chunk in source:
            await flowing()  # while partitioned, the chunk is held here and the source's buffers fill
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    await link.close()  # one side gone: the whole connection goes


class CuttingProxy:
    """Forwards 127.0.0.1:``port`` to the server; ``cut_all`` aborts both ends of every open connection."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._open: set[_Link] = set()
        self.port = 0
        self.refusing = False
        """While set, a new connection is reset as soon as it is accepted."""
        self.accepted = 0
        self.connections_cut = 0
        self.cuts = 0
        """Cuts that found at least one connection to drop."""
        self._flowing = anyio.Event()
        self._flowing.set()

    def partition(self) -> None:
        """Stop forwarding in both directions, closing nothing: every byte sent from now on is held."""
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def heal(self) -> None:
        """Forward again, held bytes first."""
        self._flowing.set()

    async def _wait_flowing(self) -> None:
        await self._flowing.wait()

    def url_for(self, database_url: str) -> str:
        """``database_url`` (same user, password, database) reaching the server through this proxy."""
        parsed = make_url(database_url)
        query = {key: value for key, value in parsed.query.items() if key != "host"}
        return parsed.set(host="127.0.0.1", port=self.port, query=query).render_as_string(hide_password=False)

    async def cut_all(self) -> int:
        """Reset every open connection (the client gets an RST, the server an EOF); how many there were."""
        links = list(self._open)
        for link in links:
            await link.close(reset=True)
        if links:
            self.cuts += 1
            self.connections_cut += len(links)
        return len(links)

    async def cut_every(self, seconds: float) -> None:
        while True:
            await anyio.sleep(seconds)
            await self.cut_all()

    async def close_all(self) -> None:
        for link in list(self._open):
            await link.close()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started()
            await listener.serve(self._forward)

    async def _forward(self, client: SocketStream) -> None:
        async with client:
            self.accepted += 1
            upstream: ByteStream | None = None
            if not self.refusing:
                with contextlib.suppress(OSError):
                    upstream = await self._upstream.connect()
            if upstream is None:
                with contextlib.suppress(OSError):
                    client.extra(SocketAttribute.raw_socket).setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE
                    )
                return
            link = _Link(client, upstream)
            self._open.add(link)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, client, upstream, link, self._wait_flowing)
                    await _pump(upstream, client, link, self._wait_flowing)
            finally:
                self._open.discard(link)


@asynccontextmanager
async def running_proxy(upstream: Upstream) -> AsyncIterator[CuttingProxy]:
    """A proxy serving until the block ends; then every connection through it is closed."""
    proxy = CuttingProxy(upstream)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            proxy.heal()
            with anyio.CancelScope(shield=True):
                await proxy.close_all()
            tg.cancel_scope.cancel()
