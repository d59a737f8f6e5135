"""Step 5 actor: packages the draft for its target, which may reject it."""

from __future__ import annotations

from actors.step import StepActor
from content import delivery


class Deliver(StepActor):
    step = "deliver"
    generate = staticmethod(delivery.rows)
