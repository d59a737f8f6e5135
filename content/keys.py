"""Business row keys derived from the run, so a re-run step writes the same keys again."""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

# asyncpg's own UUID: a uuid.UUID subclass built in C, and sent to the server without conversion.
from asyncpg.pgproto.pgproto import UUID as _FastUUID


@lru_cache(maxsize=4096)
def _entity_bits(entity: str) -> int:
    return int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=16).digest(), "big")


def row_id(run_id: uuid.UUID, entity: str) -> uuid.UUID:
    """The key of ``entity`` (e.g. ``"asset/email/headline"``) within run ``run_id``.

    The run id XOR a 128-bit hash of the entity name: distinct entities of one run get distinct
    keys (primary keys are ``(run_id, id)``), at a tenth of the cost of ``uuid5`` on the hot path.
    """
    key: uuid.UUID = _FastUUID((run_id.int ^ _entity_bits(entity)).to_bytes(16, "big"))
    return key
