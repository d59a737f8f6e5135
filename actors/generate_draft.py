"""Step 3 actor: writes the draft and its asset bundles."""

from __future__ import annotations

from actors.step import StepActor
from content import draft


class GenerateDraft(StepActor):
    step = "generate_draft"
    generate = staticmethod(draft.rows)
