"""Which pipeline a daemon runs: the built-in one, or a team's own named ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys

from sagad.content.pipeline import builtin_pipeline, lognormal_waits, with_latency
from sagad.domain.pipeline import Pipeline


class PipelineNotLoaded(Exception):
    """The --pipeline option names nothing that can be run; the message says what is wrong."""


def load_pipeline(name: str) -> Pipeline:
    """The Pipeline ``module:attribute`` names (or a callable of no arguments returning one).

    The module is looked up from the current folder first, as ``python -m`` would.
    """
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise PipelineNotLoaded(f"--pipeline must be MODULE:ATTRIBUTE (e.g. mypipelines:pipeline), got {name!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PipelineNotLoaded(f"--pipeline {name}: no module named {error.name!r}") from None
    except Exception as error:  # the team's module raised on import: its message says why
        raise PipelineNotLoaded(f"--pipeline {name}: importing {module_name} failed: {_said(error)}") from None
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise PipelineNotLoaded(f"--pipeline {name}: {module_name} has no attribute {attribute!r}") from None
    if callable(found) and not isinstance(found, Pipeline):
        try:
            found = found()
        except Exception as error:
            raise PipelineNotLoaded(f"--pipeline {name}: calling {attribute}() failed: {_said(error)}") from None
    if not isinstance(found, Pipeline):
        raise PipelineNotLoaded(f"--pipeline {name} is a {type(found).__name__}, not a sagad Pipeline")
    return found


def _said(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def daemon_pipeline(
    name: str | None,
    *,
    delivery_hosts: frozenset[str],
    simulated_latency: tuple[float, float] | None,
    max_inflight: int,
) -> Pipeline:
    """The pipeline ``sagad run`` was told to run, with simulated waits before each call if asked for.

    The built-in steps' waits stand for services that take any number of calls: each step may have as
    many in flight as the daemon holds runs. A step's limit bounds its rate at limit / mean call time
    (1,000 calls of 1.1 s: 900 runs/s), so the built-in limit of 1,000 would be the figure measured,
    not the daemon. A team's pipeline keeps the limits it declares.
    """
    if name is None:
        pipeline = builtin_pipeline(delivery_hosts=delivery_hosts)
    elif delivery_hosts:
        raise PipelineNotLoaded("--delivery-hosts configures the built-in pipeline's delivery; not with --pipeline")
    else:
        pipeline = load_pipeline(name)
    if simulated_latency is not None:
        median, p99 = simulated_latency
        concurrency = max_inflight if name is None else None
        pipeline = with_latency(pipeline, lognormal_waits(median, p99), concurrency)
    return pipeline
