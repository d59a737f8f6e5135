"""Fixtures of the connection-budget and pooler suite: daemons as processes, servers of the test's own."""

from __future__ import annotations

from tests.chaos.conftest import fleet

__all__ = ["fleet"]
