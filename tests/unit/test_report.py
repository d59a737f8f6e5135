"""The load report's steady rate: finishes per second in the middle of a load, without its ramp or tail."""

from __future__ import annotations

import pytest

from sagad.cli.report import _steady_rate


def test_a_steady_stream_of_finishes_gives_its_rate_whatever_the_ramp_and_the_tail() -> None:
    stream = [10 + i / 1000 for i in range(10_000)]  # 1,000 a second for 10 s
    ramp = [i / 10 for i in range(100)]  # 10 a second before it
    tail = [20.0 + i for i in range(100)]  # one a second after it
    assert _steady_rate(ramp + stream + tail) == pytest.approx(1000, rel=0.01)


def test_too_few_finishes_or_all_at_once_give_no_rate() -> None:
    assert _steady_rate([]) == 0.0
    assert _steady_rate([5.0]) == 0.0
    assert _steady_rate([5.0] * 100) == 0.0
