"""Step 4 actor: scores the draft; a score under the threshold fails the run."""

from __future__ import annotations

from actors.step import StepActor
from content import qc


class QcEvaluate(StepActor):
    step = "qc_evaluate"
    generate = staticmethod(qc.rows)
