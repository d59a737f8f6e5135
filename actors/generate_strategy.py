"""Step 2 actor: writes the strategy document."""

from __future__ import annotations

from sagad.actors.step import StepActor
from sagad.content import strategy
from sagad.domain.steps import Step


class GenerateStrategy(StepActor):
    step = Step.GENERATE_STRATEGY
    generate = staticmethod(strategy.rows)
