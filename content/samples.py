"""Briefs built to end a chosen way: what the load test submits and the tests check against."""

from __future__ import annotations

import random
from enum import Enum
from typing import Any, assert_never

from sagad.domain.steps import Step


class Ending(Enum):
    """Where a sample brief is built to end."""

    COMPLETED = "completed"
    QC_FAIL = "qc_fail"
    DELIVERY_FAIL = "delivery_fail"
    INVALID = "invalid"

    @property
    def failed_step(self) -> Step | None:
        match self:
            case Ending.COMPLETED:
                return None
            case Ending.QC_FAIL:
                return Step.QC_EVALUATE
            case Ending.DELIVERY_FAIL:
                return Step.DELIVER
            case Ending.INVALID:
                return Step.NORMALIZE_BRIEF
            case _:
                assert_never(self)


_PRODUCTS = ("trail shoes", "rain jacket", "camping stove", "headlamp", "water filter", "sleeping bag")
_CHANNELS = ("email", "social", "blog", "search", "video")


def sample_brief(outcome: Ending, seed: int) -> dict[str, Any]:
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
        case Ending.COMPLETED:
            pass
        case Ending.QC_FAIL:
            brief["key_message"] = "guaranteed results, a miracle in a box"
        case Ending.DELIVERY_FAIL:
            brief["delivery"] = {"target": "social", "destination": f"client-{seed % 97}"}
            brief["word_limit"] = 1500
        case Ending.INVALID:
            brief["channels"] = [*channels, "fax"]
        case _:
            assert_never(outcome)
    return brief
