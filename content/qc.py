"""Step 4: quality control. Claims that no brand can back up sink the score below the threshold."""

from __future__ import annotations

import re
import uuid

from sagad.content.brief import Brief
from sagad.domain.rows import Row, row_key
from sagad.errors import StepFailed

THRESHOLD = 0.7
BANNED_CLAIMS = ("guaranteed", "miracle", "risk-free", "cure")
_CLAIMS = re.compile(r"\b(" + "|".join(re.escape(c) for c in BANNED_CLAIMS) + r")\b", re.IGNORECASE)


def findings(brief: Brief) -> list[tuple[str, str]]:
    """(severity, message) per finding: a blocker per banned claim, a note per channel."""
    text = " ".join([brief.product, brief.audience, brief.key_message])
    claims = sorted({m.lower() for m in _CLAIMS.findall(text)})
    blockers = [("blocker", f"unsupported claim {claim!r}") for claim in claims]
    notes = [("info", f"check that the call to action suits {channel}") for channel in brief.channels]
    return blockers + notes


def score(issues: list[tuple[str, str]]) -> float:
    blockers = sum(1 for severity, _ in issues if severity == "blocker")
    notes = len(issues) - blockers
    return round(max(0.0, 1.0 - 0.4 * blockers - 0.01 * notes), 2)


def rows(run_id: uuid.UUID, brief: Brief) -> dict[str, list[Row]]:
    issues = findings(brief)
    result = score(issues)
    if result < THRESHOLD:
        blockers = "; ".join(message for severity, message in issues if severity == "blocker")
        raise StepFailed(f"QC score {result:.2f} below threshold {THRESHOLD:.2f}: {blockers}")
    qc_id = row_key(run_id, "qc")
    return {
        "qc_results": [
            {
                "run_id": run_id,
                "id": qc_id,
                "draft_id": row_key(run_id, "draft"),
                "score": result,
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
            for n, (severity, message) in enumerate(issues)
        ],
    }
