"""Step 1 actor: checks the brief against the catalog and stores it normalized, with its intake."""

from __future__ import annotations

from actors.step import StepActor
from content import normalize


class NormalizeBrief(StepActor):
    step = "normalize_brief"
    generate = staticmethod(normalize.rows)
