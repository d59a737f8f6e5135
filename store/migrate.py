"""Applying and checking the alembic migrations."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from sagad.errors import BrokenInstall, SchemaNotReady
from sagad.store.db import Database, asyncpg_dsn

# The scripts ship as package data of sagad.migrations, wherever sagad is installed.
_SCRIPTS = str(files("sagad.migrations"))


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy's asyncpg dialect wants it."""
    return make_url(asyncpg_dsn(url)).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration; ``migrations/env.py`` connects to ``url``."""
    config = Config()
    config.set_main_option("script_location", _SCRIPTS)
    if url is not None:
        config.attributes["url"] = sqlalchemy_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking: call it outside the event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise BrokenInstall(f"no migration scripts in {_SCRIPTS}: reinstall sagad")
    return head


async def ensure_migrated(db: Database) -> None:
    """Raise SchemaNotReady unless the database is at this sagad's migration head."""
    rows = await db.fetch("SELECT to_regclass('alembic_version') IS NOT NULL AS present")
    current = None
    if rows[0]["present"]:
        versions = await db.fetch("SELECT version_num FROM alembic_version")
        current = versions[0]["version_num"] if versions else None
    head = head_revision()
    if current != head:
        found = f"at revision {current}" if current else "not migrated"
        raise SchemaNotReady(f"the database is {found}, this sagad needs {head}: run `sagad migrate`")
