"""The step actors in pipeline order."""

from __future__ import annotations

from actors.deliver import Deliver
from actors.generate_draft import GenerateDraft
from actors.generate_strategy import GenerateStrategy
from actors.normalize_brief import NormalizeBrief
from actors.qc_evaluate import QcEvaluate
from actors.step import StepActor
from store.schema import STEPS

STEP_ACTORS: tuple[type[StepActor], ...] = (
    NormalizeBrief,
    GenerateStrategy,
    GenerateDraft,
    QcEvaluate,
    Deliver,
)
assert tuple(actor.step for actor in STEP_ACTORS) == STEPS
