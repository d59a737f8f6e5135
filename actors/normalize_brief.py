"""Step 1 actor: checks the brief against the catalog and stores it normalized, with its intake."""

from __future__ import annotations

from sagad.actors.step import StepActor
from sagad.content import normalize
from sagad.domain.steps import Step


class NormalizeBrief(StepActor):
    step = Step.NORMALIZE_BRIEF
    generate = staticmethod(normalize.rows)
