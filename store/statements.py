"""A statement's SQL and the order of its arguments, built by the same function."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_PARAMETER = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL with numbered parameters, and the names of those parameters in the order of their numbers."""

    sql: str
    params: tuple[str, ...]
    """``params[0]`` is ``$1``, ``params[1]`` is ``$2``, ..."""

    def __post_init__(self) -> None:
        numbers = {int(n) for n in _PARAMETER.findall(self.sql)}
        if numbers != set(range(1, len(self.params) + 1)):
            raise ValueError(f"a statement numbers its parameters {sorted(numbers)} but names {len(self.params)}")

    def args(self, values: Mapping[str, object]) -> tuple[object, ...]:
        """The values in the statement's order; a name missing or unknown is an error, not a misplaced argument."""
        if values.keys() != set(self.params):
            missing, unknown = set(self.params) - values.keys(), values.keys() - set(self.params)
            raise TypeError(f"statement arguments: missing {sorted(missing)}, unknown {sorted(unknown)}")
        return tuple(values[name] for name in self.params)
