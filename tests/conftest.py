"""Every test gets its own database, cloned from a template migrated once per session.

The server is ``SAGAD_TEST_DATABASE_URL`` when set, else the embedded PostgreSQL under
``./.sagad/`` (so the suite runs on a machine with no server of its own).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from sagad.store import migrate
from sagad.store.db import Database, asyncpg_dsn
from sagad.store.embedded import embedded_url
from sagad.store.runs import RunStore


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server_url() -> str:
    """A URL of the server's maintenance database, with rights to create databases."""
    return os.environ.get("SAGAD_TEST_DATABASE_URL") or embedded_url()


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    name = f"sagad_template_{os.getpid()}"
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    migrate.upgrade(with_database(server_url, name))
    yield name
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(server_url: str, template_name: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone, dropped afterwards."""
    name = f"sagad_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template_name}"))
    yield with_database(server_url, name)
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"sagad_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name}"))
    yield with_database(server_url, name)
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, max_size=20)
    yield database
    await database.close()


@pytest.fixture
def runs(db: Database) -> RunStore:
    return RunStore(db)
