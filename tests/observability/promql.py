"""The PromQL that the Grafana dashboard and the alert rules run, and the metric names it selects."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_NAME_MATCHER = re.compile(r"""__name__\s*=\s*["'`]([a-zA-Z_:][\w:]*)["'`]""")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
# An identifier that is neither part of a number (1e3, 0.5) nor a function or aggregation call.
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "start", "end", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Every metric name that a PromQL expression selects (`up`, `sagad_runs_total`, ...)."""
    names = set(_NAME_MATCHER.findall(expr))
    # Strip what may hold words that are not metric names: strings, label matchers, ranges, groupings.
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING, _OFFSET):
        expr = pattern.sub(" ", expr)
    names.update(name for name in _IDENTIFIER.findall(expr) if name.lower() not in _KEYWORDS)
    return names


def dashboard_queries(path: Path | str) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of a Grafana dashboard, rows included."""
    dashboard = json.loads(Path(path).read_text())
    return [
        (panel.get("title", ""), target["expr"])
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_rules(path: Path | str) -> list[tuple[str, str]]:
    """(alert name, expr) for every alerting rule of a Prometheus rule file."""
    rules = yaml.safe_load(Path(path).read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # A collapsed row keeps its panels inside itself.
        yield from _panels(panel.get("panels", []))
