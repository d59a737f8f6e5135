"""The step actors in pipeline order."""

from __future__ import annotations

from sagad.actors.deliver import Deliver
from sagad.actors.generate_draft import GenerateDraft
from sagad.actors.generate_strategy import GenerateStrategy
from sagad.actors.normalize_brief import NormalizeBrief
from sagad.actors.qc_evaluate import QcEvaluate
from sagad.actors.step import StepActor
from sagad.domain.steps import Step

STEP_ACTORS: tuple[type[StepActor], ...] = (
    NormalizeBrief,
    GenerateStrategy,
    GenerateDraft,
    QcEvaluate,
    Deliver,
)
assert tuple(actor.step for actor in STEP_ACTORS) == tuple(Step)
