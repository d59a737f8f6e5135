"""Step 4 actor: scores the draft; a score under the threshold fails the run."""

from __future__ import annotations

from sagad.actors.step import StepActor
from sagad.content import qc
from sagad.domain.steps import Step


class QcEvaluate(StepActor):
    step = Step.QC_EVALUATE
    generate = staticmethod(qc.rows)
