"""Serving a load-test helper as a process: up until SIGTERM or SIGINT, saying where it listens once bound."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import anyio

Server = TypeVar("Server", bound=AbstractAsyncContextManager[object])


async def serve_until_stopped(server: Server, listening: Callable[[Server], str]) -> None:
    """Enter ``server``, print ``listening(server)`` (its address, for whoever started it), wait for a signal."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with server:
            print(listening(server), flush=True)
            async for _ in signals:
                return
