"""PgBouncer in transaction mode in front of a server: a process its owner may kill and restart.

The pooler tests (``tests/pooler``) run daemons through it, and ``bench.budget``'s ``B/pgbouncer``
variant measures what it adds; it lives in ``bench`` so that both may import it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgBouncer:
    """Debian's pgbouncer (1.18: no protocol-level prepared statements), ``pool_mode = transaction``."""

    def __init__(self, server_url: str, *, pool_size: int = 20) -> None:
        server = make_url(server_url)
        # A URL to a Unix socket names its folder in the query (``?host=/var/run/postgresql``).
        host = server.host or server.query.get("host") or "127.0.0.1"
        self.folder = Path(tempfile.mkdtemp(prefix="sagad-bouncer-"))
        self.port = _free_port()
        self.log = self.folder / "pgbouncer.log"
        (self.folder / "users.txt").write_text(f'"{server.username}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            f"logfile = {self.log}\npidfile = {self.folder / 'pgbouncer.pid'}\n"
            f"admin_users = {server.username}\n"
        )
        self._server = server
        self.process: subprocess.Popen[bytes] | None = None

    def url_for(self, server_url: str) -> str:
        """``server_url`` (a database on the server behind) through the pooler."""
        url = make_url(server_url)
        query = {key: value for key, value in url.query.items() if key != "host"}
        return url.set(host="127.0.0.1", port=self.port, query=query).render_as_string(hide_password=False)

    def start(self) -> PgBouncer:
        user = ["-u", "embedded_postgres"] if os.geteuid() == 0 else []  # it refuses to run as root
        if user:
            shutil.chown(self.folder, "embedded_postgres")
            for path in self.folder.iterdir():
                shutil.chown(path, "embedded_postgres")
        self.process = subprocess.Popen([BINARY, "-q", *user, str(self.folder / "pgbouncer.ini")])
        deadline = time.monotonic() + 10
        while True:  # listening once a TCP connect succeeds
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log_tail()}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
