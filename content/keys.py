"""Business row keys derived from the run, so a re-run step writes the same keys again."""

from __future__ import annotations

import uuid


def row_id(run_id: uuid.UUID, entity: str) -> uuid.UUID:
    """The key of ``entity`` (e.g. ``"asset/email/headline"``) within run ``run_id``."""
    return uuid.uuid5(run_id, entity)
