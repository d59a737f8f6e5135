"""When a step actor commits: at once, lingering for company, beside a commit in flight, or after it."""

from __future__ import annotations

import math

import pytest

from sagad.actors.commit_policy import CommitPolicy

SLOW = CommitPolicy(batch_limit=10, linger_share=0.05, linger_cap_seconds=0.05)


def pause(policy: CommitPolicy, *, now: float, waiting: int = 1, oldest: float = 100.0, **state: float) -> float:
    state.setdefault("committing", 0)
    state.setdefault("last_started", 0.0)
    state.setdefault("typical_call", 1.0)
    return policy.pause(
        now=now,
        waiting=waiting,
        oldest=oldest,
        committing=int(state["committing"]),
        last_started=state["last_started"],
        typical_call=state["typical_call"],
    )


def test_a_run_that_finished_alone_lingers_a_share_of_the_typical_call_then_is_committed() -> None:
    assert pause(SLOW, now=100.0, typical_call=0.4) == pytest.approx(0.02)  # 5% of 0.4 s
    assert pause(SLOW, now=100.019, typical_call=0.4) == pytest.approx(0.001)
    assert pause(SLOW, now=100.02, typical_call=0.4) == 0.0


def test_a_linger_is_capped_whatever_the_call_takes() -> None:
    assert pause(SLOW, now=100.0, typical_call=60.0) == pytest.approx(0.05)


def test_a_full_batch_is_committed_at_once() -> None:
    assert pause(SLOW, now=100.0, waiting=10, typical_call=60.0) == 0.0


def test_a_step_that_never_waits_never_lingers() -> None:
    instant = CommitPolicy(batch_limit=10, instant=True, linger_share=1e6, linger_cap_seconds=60.0)
    assert pause(instant, now=100.0, typical_call=1.0) == 0.0


def test_beside_a_commit_in_flight_runs_wait_their_pause_and_a_near_commits_time() -> None:
    policy = CommitPolicy(batch_limit=10, pipeline_after_seconds=0.005, near_commit_seconds=0.01)
    # The newest commit started at 100.0: a second one waits until it has taken a near commit's time.
    assert pause(policy, now=100.002, oldest=100.0, committing=1, last_started=100.0) == pytest.approx(0.008)
    # Runs that finished just now wait their own pause, even when the newest commit is old.
    assert pause(policy, now=100.5, oldest=100.499, committing=1, last_started=100.0) == pytest.approx(0.004)
    assert pause(policy, now=100.5, oldest=100.4, committing=1, last_started=100.0) == 0.0


def test_no_more_commits_start_than_may_be_in_flight() -> None:
    policy = CommitPolicy(batch_limit=10, commits_in_flight=2)
    assert pause(policy, now=200.0, committing=2, last_started=0.0) == math.inf
    assert pause(policy, now=200.0, committing=1, last_started=0.0) == 0.0
