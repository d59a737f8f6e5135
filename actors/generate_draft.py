"""Step 3 actor: writes the draft and its asset bundles."""

from __future__ import annotations

from sagad.actors.step import StepActor
from sagad.content import draft
from sagad.domain.steps import Step


class GenerateDraft(StepActor):
    step = Step.GENERATE_DRAFT
    generate = staticmethod(draft.rows)
