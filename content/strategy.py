"""Step 2: a strategy document derived from the brief; the draft follows it."""

from __future__ import annotations

import uuid
from typing import TypedDict, cast

from sagad.content.brief import BriefData
from sagad.domain.pipeline import StepContext, StepResult
from sagad.domain.rows import Rows, row_key


class Strategy(TypedDict):
    """The step's output: what the draft is written to."""

    positioning: str
    key_messages: list[str]
    channel_budgets: dict[str, int]


def channel_split(brief: BriefData) -> dict[str, int]:
    """The budget in euros per channel, split evenly with the remainder on the first channel."""
    channels = brief["channels"]
    share, rest = divmod(brief["budget_eur"], len(channels))
    return {c: share + (rest if i == 0 else 0) for i, c in enumerate(channels)}


def plan(brief: BriefData) -> Strategy:
    return {
        "positioning": f"{brief['product']} for {brief['audience']}, in a {brief['tone']} voice",
        "key_messages": [brief["key_message"], *(f"drive {goal}" for goal in brief["goals"])],
        "channel_budgets": channel_split(brief),
    }


def rows(run_id: uuid.UUID, strategy: Strategy) -> Rows:
    plan_text = ", ".join(f"{channel}: {euros} EUR" for channel, euros in strategy["channel_budgets"].items())
    return {
        "strategy_document": [
            {
                "run_id": run_id,
                "id": row_key(run_id, "strategy"),
                "brief_id": row_key(run_id, "brief"),
                "positioning": strategy["positioning"],
                "key_messages": " | ".join(strategy["key_messages"]),
                "channel_plan": plan_text,
            }
        ]
    }


async def generate_strategy(ctx: StepContext) -> StepResult:
    strategy = plan(cast(BriefData, ctx.brief))
    return StepResult(rows(ctx.run_id, strategy), strategy)
