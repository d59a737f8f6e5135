"""Step 2 actor: writes the strategy document."""

from __future__ import annotations

from actors.step import StepActor
from content import strategy


class GenerateStrategy(StepActor):
    step = "generate_strategy"
    generate = staticmethod(strategy.rows)
