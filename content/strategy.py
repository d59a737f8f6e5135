"""Step 2: a strategy document derived from the brief."""

from __future__ import annotations

import uuid

from sagad.content.brief import Brief
from sagad.domain.rows import Row, row_key


def channel_split(brief: Brief) -> dict[str, int]:
    """The budget in euros per channel, split evenly with the remainder on the first channel."""
    share, rest = divmod(brief.budget_eur, len(brief.channels))
    return {c: share + (rest if i == 0 else 0) for i, c in enumerate(brief.channels)}


def rows(run_id: uuid.UUID, brief: Brief) -> dict[str, list[Row]]:
    plan = ", ".join(f"{channel}: {euros} EUR" for channel, euros in channel_split(brief).items())
    return {
        "strategy_document": [
            {
                "run_id": run_id,
                "id": row_key(run_id, "strategy"),
                "brief_id": row_key(run_id, "brief"),
                "positioning": f"{brief.product} for {brief.audience}, in a {brief.tone} voice",
                "key_messages": " | ".join([brief.key_message, *(f"drive {g}" for g in brief.goals)]),
                "channel_plan": plan,
            }
        ]
    }
