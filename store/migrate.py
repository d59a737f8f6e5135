"""Applying and checking the alembic migrations."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from sagad.errors import BrokenInstall
from sagad.store.db import asyncpg_dsn
from sagad.store.version import ensure_migrated

__all__ = ["alembic_config", "downgrade", "ensure_migrated", "head_revision", "sqlalchemy_url", "upgrade"]

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
