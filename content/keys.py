"""Business row keys derived from the run, so a re-run step writes the same keys again."""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache


@lru_cache(maxsize=4096)
def _entity_bits(entity: str) -> int:
    return int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=16).digest(), "big")


def row_id(run_id: uuid.UUID, entity: str) -> uuid.UUID:
    """The key of ``entity`` (e.g. ``"asset/email/headline"``) within run ``run_id``.

    The run id XOR a 128-bit hash of the entity name: distinct entities of one run get distinct
    keys (primary keys are ``(run_id, id)``), and it costs a quarter of ``uuid5`` on the hot path.
    """
    return uuid.UUID(int=run_id.int ^ _entity_bits(entity))
