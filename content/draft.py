"""Step 3: a draft written to the strategy, and for each channel a bundle of assets. QC reads it."""

from __future__ import annotations

import uuid
from typing import TypedDict, cast

from sagad.content.brief import BriefData
from sagad.content.strategy import Strategy
from sagad.domain.pipeline import StepContext, StepResult
from sagad.domain.rows import Row, Rows, row_key
from sagad.domain.steps import Step

ASSET_KINDS = ("headline", "body", "call_to_action")


class Asset(TypedDict):
    channel: str
    kind: str
    content: str


class Draft(TypedDict):
    """The step's output: the copy QC evaluates and delivery packages."""

    title: str
    body: str
    word_count: int
    assets: list[Asset]


def _asset(brief: BriefData, channel: str, kind: str) -> str:
    if kind == "headline":
        return f"{brief['product']}: {brief['key_message']}"[:120]
    if kind == "body":
        return f"For {brief['audience']}. {brief['key_message']}. Made for {channel} by {brief['client']}."
    return f"Discover {brief['product']} today"


def write(brief: BriefData, strategy: Strategy) -> Draft:
    lead, *calls = strategy["key_messages"]
    body = " ".join([f"{strategy['positioning']}.", *(f"{lead} ({call})." for call in calls)])
    assets: list[Asset] = [
        {"channel": channel, "kind": kind, "content": _asset(brief, channel, kind)}
        for channel in strategy["channel_budgets"]
        for kind in ASSET_KINDS
    ]
    return {
        "title": f"{brief['client']}: {brief['product']}"[:200],
        "body": body,
        "word_count": len(body.split()),
        "assets": assets,
    }


def rows(run_id: uuid.UUID, draft: Draft) -> Rows:
    draft_id = row_key(run_id, "draft")
    bundles: list[Row] = []
    assets: list[Row] = []
    for asset in draft["assets"]:
        channel, kind = asset["channel"], asset["kind"]
        bundle_id = row_key(run_id, f"bundle/{channel}")
        if not bundles or bundles[-1]["id"] != bundle_id:
            bundles.append({"run_id": run_id, "id": bundle_id, "draft_id": draft_id, "channel": channel})
        assets.append(
            {
                "run_id": run_id,
                "id": row_key(run_id, f"asset/{channel}/{kind}"),
                "bundle_id": bundle_id,
                "kind": kind,
                "content": asset["content"],
                "size_bytes": len(asset["content"].encode()),
            }
        )
    return {
        "production_drafts": [
            {
                "run_id": run_id,
                "id": draft_id,
                "strategy_id": row_key(run_id, "strategy"),
                "title": draft["title"],
                "body": draft["body"],
                "word_count": draft["word_count"],
            }
        ],
        "production_bundles": bundles,
        "production_bundle_assets": assets,
    }


async def generate_draft(ctx: StepContext) -> StepResult:
    strategy = cast(Strategy, ctx.outputs[Step.GENERATE_STRATEGY])
    draft = write(cast(BriefData, ctx.brief), strategy)
    return StepResult(rows(ctx.run_id, draft), draft)
