"""Step 3: a draft, and for each channel a bundle of assets."""

from __future__ import annotations

import uuid

from sagad.content.brief import Brief
from sagad.domain.rows import Row, row_key

ASSET_KINDS = ("headline", "body", "call_to_action")


def _asset(brief: Brief, channel: str, kind: str) -> str:
    if kind == "headline":
        return f"{brief.product}: {brief.key_message}"[:120]
    if kind == "body":
        return f"For {brief.audience}. {brief.key_message}. Made for {channel} by {brief.client}."
    return f"Discover {brief.product} today"


def rows(run_id: uuid.UUID, brief: Brief) -> dict[str, list[Row]]:
    draft_id = row_key(run_id, "draft")
    body = " ".join(f"{brief.key_message} ({goal})." for goal in brief.goals)
    bundles: list[Row] = []
    assets: list[Row] = []
    for channel in brief.channels:
        bundle_id = row_key(run_id, f"bundle/{channel}")
        bundles.append({"run_id": run_id, "id": bundle_id, "draft_id": draft_id, "channel": channel})
        for kind in ASSET_KINDS:
            content = _asset(brief, channel, kind)
            assets.append(
                {
                    "run_id": run_id,
                    "id": row_key(run_id, f"asset/{channel}/{kind}"),
                    "bundle_id": bundle_id,
                    "kind": kind,
                    "content": content,
                    "size_bytes": len(content.encode()),
                }
            )
    return {
        "production_drafts": [
            {
                "run_id": run_id,
                "id": draft_id,
                "strategy_id": row_key(run_id, "strategy"),
                "title": f"{brief.client}: {brief.product}"[:200],
                "body": body,
                "word_count": len(body.split()),
            }
        ],
        "production_bundles": bundles,
        "production_bundle_assets": assets,
    }
