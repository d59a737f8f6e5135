"""Every conformance test runs once against the in-memory fake and once against the SQL stores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagad.store.db import Database
from tests.conformance.harness import FakeHarness, Harness, SqlHarness


@pytest.fixture(params=["fake", "sql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh database for the SQL side; none for the fake's, which needs no server."""
    return None if request.param == "fake" else str(request.getfixturevalue("database_url"))


@pytest.fixture
async def h(store_url: str | None) -> AsyncIterator[Harness]:
    if store_url is None:
        yield FakeHarness()
        return
    db = await Database.connect(store_url, max_size=4)
    try:
        yield SqlHarness(db)
    finally:
        await db.close()
