"""Briefs built to end a chosen way: what the load test submits and the tests check against."""

from __future__ import annotations

import random
from enum import Enum
from typing import Any, assert_never


class Outcome(Enum):
    """Where a sample brief is built to end."""

    COMPLETED = "completed"
    QC_FAIL = "qc_fail"
    DELIVERY_FAIL = "delivery_fail"
    INVALID = "invalid"

    @property
    def failed_step(self) -> str | None:
        match self:
            case Outcome.COMPLETED:
                return None
            case Outcome.QC_FAIL:
                return "qc_evaluate"
            case Outcome.DELIVERY_FAIL:
                return "deliver"
            case Outcome.INVALID:
                return "normalize_brief"
            case _:
                assert_never(self)


_PRODUCTS = ("trail shoes", "rain jacket", "camping stove", "headlamp", "water filter", "sleeping bag")
_CHANNELS = ("email", "social", "blog", "search", "video")


def sample_brief(outcome: Outcome, seed: int) -> dict[str, Any]:
    """A valid-shaped brief that ends as ``outcome``; ``seed`` varies its content deterministically."""
    rng = random.Random(seed)
    channels = rng.sample(_CHANNELS, rng.randint(1, 3))
    brief: dict[str, Any] = {
        "client": f"Client {seed % 997}",
        "product": rng.choice(_PRODUCTS),
        "audience": "outdoor people who plan their weekends",
        "key_message": "light, tough, and made to be repaired",
        "tone": rng.choice(("friendly", "formal", "playful")),
        "goals": rng.sample(["awareness", "signups", "sales", "retention"], rng.randint(1, 2)),
        "channels": channels,
        "budget_eur": rng.randint(1_000, 50_000),
        "word_limit": rng.randint(50, 300),
        "delivery": {"target": rng.choice(("cms", "email", "social")), "destination": f"client-{seed % 97}"},
    }
    match outcome:
        case Outcome.COMPLETED:
            pass
        case Outcome.QC_FAIL:
            brief["key_message"] = "guaranteed results, a miracle in a box"
        case Outcome.DELIVERY_FAIL:
            brief["delivery"] = {"target": "social", "destination": f"client-{seed % 97}"}
            brief["word_limit"] = 1500
        case Outcome.INVALID:
            brief["channels"] = [*channels, "fax"]
        case _:
            assert_never(outcome)
    return brief
