"""Step 5: package the draft for its target. Each target takes packages up to a size in words."""

from __future__ import annotations

import uuid

from sagad.content.brief import Brief
from sagad.content.draft import ASSET_KINDS
from sagad.domain.rows import Row, row_key
from sagad.errors import StepFailed

WORD_LIMITS = {"cms": 20_000, "email": 2_000, "social": 1_000}
"""The largest package (the brief's word limit times its channels) each target accepts."""


def package_words(brief: Brief) -> int:
    return brief.word_limit * len(brief.channels)


def rows(run_id: uuid.UUID, brief: Brief) -> dict[str, list[Row]]:
    target = brief.delivery.target
    words = package_words(brief)
    if words > WORD_LIMITS[target]:
        raise StepFailed(
            f"delivery target {target!r} rejected the package: {words} words, over its limit of {WORD_LIMITS[target]}"
        )
    package_id = row_key(run_id, "package")
    return {
        "delivery_packages": [
            {
                "run_id": run_id,
                "id": package_id,
                "draft_id": row_key(run_id, "draft"),
                "target": target,
                "destination": brief.delivery.destination,
                "total_words": words,
            }
        ],
        "delivery_artifacts": [
            {
                "run_id": run_id,
                "id": row_key(run_id, f"artifact/{channel}/{kind}"),
                "package_id": package_id,
                "asset_id": row_key(run_id, f"asset/{channel}/{kind}"),
                "uri": f"{target}://{brief.delivery.destination}/{channel}/{kind}",
            }
            for channel in brief.channels
            for kind in ASSET_KINDS
        ],
    }
