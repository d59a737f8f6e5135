"""Daemon processes of one test: started under names that say which life they are, never left behind."""

from __future__ import annotations

import urllib.request
from functools import partial
from pathlib import Path

import anyio
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.processes import Daemon


def as_writer(database_url: str, writer: str) -> str:
    """The URL with ``application_name`` set, so the write log can tell who wrote what."""
    parsed = make_url(database_url)
    return parsed.update_query_dict({"application_name": writer}).render_as_string(hide_password=False)


class Fleet:
    """Starts ``sagad run`` processes; ``kill_all`` leaves none running, whatever state they are in."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[Daemon] = []

    def start(self, database_url: str, worker: str, *options: str) -> Daemon:
        """A daemon whose connections name ``worker`` as their application (see ``as_writer``)."""
        daemon = Daemon(as_writer(database_url, worker), worker, self._log_dir, *options).start()
        self.started.append(daemon)
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.ensure_stopped()  # SIGKILL ends a SIGSTOPped process too

    @staticmethod
    def log_tail(daemon: Daemon, lines: int = 40) -> str:
        return "\n".join(daemon.log.read_text(errors="replace").splitlines()[-lines:])


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def sample(daemon: Daemon, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (e.g. ``result="lost"``)."""
    body = await anyio.to_thread.run_sync(partial(_scrape, await daemon.metrics_url()))
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
    )


def is_running(daemon: Daemon) -> bool:
    return daemon.process is not None and daemon.process.poll() is None
