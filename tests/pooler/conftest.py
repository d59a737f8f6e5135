"""Fixtures of the budget and pooler suite: daemons as processes, a server and a PgBouncer of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.bouncer import PgBouncer
from tests.chaos.conftest import fleet, throwaway_database_url, throwaway_server

__all__ = ["fleet", "throwaway_database_url", "throwaway_server"]


@pytest.fixture
def bouncer(throwaway_server: object, throwaway_database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the test's own server; stopped and deleted afterwards."""
    pooler = PgBouncer(throwaway_database_url)
    try:
        yield pooler.start()
    finally:
        pooler.destroy()


@pytest.fixture
def pooled_url(bouncer: PgBouncer, throwaway_database_url: str) -> str:
    """The test's migrated database, through the pooler."""
    return bouncer.url_for(throwaway_database_url)
