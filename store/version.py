"""The schema revision this sagad needs, read without alembic (which costs a command a tenth of a second)."""

from __future__ import annotations

import re
from importlib.resources import files

from sagad.errors import BrokenInstall, SchemaNotReady
from sagad.store.db import Database

_REVISION = re.compile(r'^revision: str = "([^"]+)"', re.MULTILINE)
_DOWN = re.compile(r'^down_revision: str \| None = (?:"([^"]+)"|None)', re.MULTILINE)


def head_revision() -> str:
    """The one revision no other migration script revises (alembic's head, from the scripts' text)."""
    versions = files("sagad.migrations").joinpath("versions")
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in versions.iterdir():
        if not script.name.endswith(".py") or script.name.startswith("__"):
            continue
        text = script.read_text(encoding="utf-8")
        found, down = _REVISION.search(text), _DOWN.search(text)
        if found is None or down is None:
            raise BrokenInstall(f"migration script without a revision: {script.name}: reinstall sagad")
        revisions.add(found.group(1))
        if down.group(1):
            revised.add(down.group(1))
    heads = revisions - revised
    if len(heads) != 1:
        raise BrokenInstall(f"the migration scripts have {len(heads)} heads, not one: reinstall sagad")
    return heads.pop()


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
