"""Step 4: quality control of the draft. Claims no brand can back up sink its score below the threshold."""

from __future__ import annotations

import re
import uuid
from typing import TypedDict, cast

from sagad.content.draft import Draft
from sagad.domain.pipeline import StepContext, StepResult
from sagad.domain.rows import Rows, row_key
from sagad.domain.steps import Step
from sagad.errors import StepFailed

THRESHOLD = 0.7
BANNED_CLAIMS = ("guaranteed", "miracle", "risk-free", "cure")
_CLAIMS = re.compile(r"\b(" + "|".join(re.escape(c) for c in BANNED_CLAIMS) + r")\b", re.IGNORECASE)


class Verdict(TypedDict):
    """The step's output: what delivery packages once QC passed it."""

    score: float
    issues: list[list[str]]
    """[severity, message] pairs (lists, as JSON keeps them)."""


def findings(draft: Draft) -> list[tuple[str, str]]:
    """(severity, message) per finding in the draft's copy: a blocker per banned claim, a note per channel."""
    copy = " ".join([draft["title"], draft["body"], *(asset["content"] for asset in draft["assets"])])
    claims = sorted({m.lower() for m in _CLAIMS.findall(copy)})
    channels = dict.fromkeys(asset["channel"] for asset in draft["assets"])
    blockers = [("blocker", f"unsupported claim {claim!r}") for claim in claims]
    notes = [("info", f"check that the call to action suits {channel}") for channel in channels]
    return blockers + notes


def score(issues: list[tuple[str, str]]) -> float:
    blockers = sum(1 for severity, _ in issues if severity == "blocker")
    notes = len(issues) - blockers
    return round(max(0.0, 1.0 - 0.4 * blockers - 0.01 * notes), 2)


def evaluate(draft: Draft) -> Verdict:
    """The verdict on a draft that passes, or StepFailed naming what sank it."""
    issues = findings(draft)
    result = score(issues)
    if result < THRESHOLD:
        blockers = "; ".join(message for severity, message in issues if severity == "blocker")
        raise StepFailed(f"QC score {result:.2f} below threshold {THRESHOLD:.2f}: {blockers}")
    return {"score": result, "issues": [[severity, message] for severity, message in issues]}


def rows(run_id: uuid.UUID, verdict: Verdict) -> Rows:
    qc_id = row_key(run_id, "qc")
    return {
        "qc_results": [
            {
                "run_id": run_id,
                "id": qc_id,
                "draft_id": row_key(run_id, "draft"),
                "score": verdict["score"],
                "passed": True,
            }
        ],
        "qc_issues": [
            {
                "run_id": run_id,
                "id": row_key(run_id, f"qc_issue/{n}"),
                "qc_result_id": qc_id,
                "severity": severity,
                "message": message,
            }
            for n, (severity, message) in enumerate(verdict["issues"])
        ],
    }


async def qc_evaluate(ctx: StepContext) -> StepResult:
    verdict = evaluate(cast(Draft, ctx.outputs[Step.GENERATE_DRAFT]))
    return StepResult(rows(ctx.run_id, verdict), verdict)
