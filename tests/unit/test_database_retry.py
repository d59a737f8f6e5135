"""Database retries: transient errors are retried with growing waits, anything else goes through, no cycles."""

from __future__ import annotations

import gc

import pytest

from sagad.actors.database_retry import MAX_WAIT_SECONDS, backoff, retry_database_errors
from sagad.errors import PermanentDatabaseError, TransientDatabaseError

pytestmark = pytest.mark.anyio


async def test_transient_errors_are_retried_and_each_is_reported_before_the_next_attempt() -> None:
    reported: list[BaseException] = []
    numbers: list[int] = []
    async for attempt in retry_database_errors(reported.append):
        with attempt:
            numbers.append(attempt.number)
            if attempt.number < 3:
                raise TransientDatabaseError(f"attempt {attempt.number}")
    assert numbers == [1, 2, 3]
    assert [str(error) for error in reported] == ["attempt 1", "attempt 2"]


async def test_an_error_that_is_not_transient_ends_the_loop_at_once() -> None:
    numbers: list[int] = []
    with pytest.raises(PermanentDatabaseError, match="refused"):
        async for attempt in retry_database_errors():
            with attempt:
                numbers.append(attempt.number)
                raise PermanentDatabaseError("refused")
    assert numbers == [1]


def test_waits_double_from_20_ms_up_to_a_cap_with_jitter_on_top() -> None:
    assert [backoff(n, 0.0) for n in (1, 2, 3)] == pytest.approx([0.02, 0.04, 0.08])
    assert backoff(30, 0.0) == backoff(100_000, 0.0) == MAX_WAIT_SECONDS
    assert backoff(1, 0.5) == pytest.approx(0.07)
    assert backoff(1, 1.0) == pytest.approx(0.12)


async def test_a_retried_loop_leaves_no_reference_cycle_to_hold_what_it_refers_to() -> None:
    # A cycle would keep the batch a commit retries alive until the collector's next full pass.
    class Batch:
        pass

    seen: list[int] = []

    async def commit(batch: Batch) -> None:
        async for attempt in retry_database_errors(lambda _: seen.append(id(batch))):
            with attempt:
                if attempt.number == 1:
                    raise TransientDatabaseError("connection lost")

    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            await commit(Batch())
        assert len(seen) == 10
        assert not [o for o in gc.get_objects() if isinstance(o, Batch)]
    finally:
        gc.enable()
