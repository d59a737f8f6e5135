"""Fixtures of the chaos suite: daemons that never outlive a test, and a PostgreSQL of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.fleet import Fleet
from tests.chaos.server import ThrowawayServer, launched


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Daemons the test starts; every one still running is killed afterwards, also on failure."""
    daemons = Fleet(tmp_path)
    try:
        yield daemons
    finally:
        daemons.kill_all()


@pytest.fixture
def throwaway_server() -> Iterator[ThrowawayServer]:
    """A server the test may stop and restart; stopped and deleted afterwards, also on failure."""
    with launched() as server:
        yield server


@pytest.fixture
def throwaway_database_url(throwaway_server: ThrowawayServer) -> str:
    """A migrated database on the test's own server."""
    return throwaway_server.create_database("sagad_chaos")
