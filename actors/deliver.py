"""Step 5 actor: packages the draft for its target, which may reject it."""

from __future__ import annotations

from sagad.actors.step import StepActor
from sagad.content import delivery
from sagad.domain.steps import Step


class Deliver(StepActor):
    step = Step.DELIVER
    generate = staticmethod(delivery.rows)
