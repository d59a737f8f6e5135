"""Step 1: check the brief against the catalog and store it, normalized, with its intake fields.

Its output is the normalized brief: what every later step gets as ``ctx.brief``.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sagad.content.brief import CHANNELS, Brief, BriefData, validate_brief
from sagad.domain.pipeline import StepContext, StepResult
from sagad.domain.rows import Rows, row_key
from sagad.errors import InvalidBrief, StepFailed


def _clean(text: str) -> str:
    return " ".join(text.split())


def normalized(raw: Any) -> Brief:
    """The brief with whitespace collapsed and goals and channels lower-cased and de-duplicated.

    ``raw`` is decoded JSON: the brief as submitted.

    Raises StepFailed naming the field when the brief is malformed or names an unknown channel.
    """
    try:
        brief = validate_brief(raw)
    except InvalidBrief as exc:
        raise StepFailed(f"invalid brief: {exc}") from None
    channels = list(dict.fromkeys(_clean(c).lower() for c in brief.channels))
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise StepFailed(
            f"invalid brief: field 'channels': unknown channel {unknown[0]!r} (known: {', '.join(CHANNELS)})"
        )
    return brief.model_copy(
        update={
            "client": _clean(brief.client),
            "product": _clean(brief.product),
            "audience": _clean(brief.audience),
            "key_message": _clean(brief.key_message),
            "tone": _clean(brief.tone).lower(),
            "goals": list(dict.fromkeys(_clean(g).lower() for g in brief.goals)),
            "channels": channels,
        }
    )


def rows(run_id: uuid.UUID, brief: Brief, payload: BriefData) -> Rows:
    brief_id = row_key(run_id, "brief")
    intake = [("goal", goal) for goal in brief.goals] + [("channel", c) for c in brief.channels]
    return {
        "onboarding_brief": [
            {
                "run_id": run_id,
                "id": brief_id,
                "client": brief.client,
                "product": brief.product,
                "audience": brief.audience,
                "tone": brief.tone,
                "budget_eur": brief.budget_eur,
                "word_limit": brief.word_limit,
                "payload": payload,
            }
        ],
        "onboarding_intake": [
            {
                "run_id": run_id,
                "id": row_key(run_id, f"intake/{field}/{value}"),
                "brief_id": brief_id,
                "field": field,
                "value": value,
            }
            for field, value in intake
        ],
    }


async def normalize_brief(ctx: StepContext) -> StepResult:
    """The brief checked and normalized: stored with its intake, and handed on as the output."""
    brief = normalized(ctx.brief)
    payload = cast(BriefData, brief.model_dump())
    return StepResult(rows(ctx.run_id, brief, payload), payload)
