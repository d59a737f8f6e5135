"""Delivery over HTTP to a real receiver on loopback: once per package by its key, never for a failed run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sagad.content.delivery import idempotency_key
from sagad.content.pipeline import builtin_pipeline
from sagad.content.samples import Ending, sample_brief
from sagad.domain.pipeline import Pipeline, RetryPolicy
from sagad.domain.runs import RunId
from sagad.domain.steps import Step
from sagad.loadtest.faults import Faults, destination_contains
from sagad.loadtest.receiver import Receiver
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.chaos.waiting import wait_count
from tests.helpers import running_daemon, shown, wait_terminal

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(attempts=2, first_wait_seconds=0.001, max_wait_seconds=0.01, jitter_seconds=0.001)


def delivering_to(receiver: Receiver, *, timeout: float = 5.0) -> Pipeline:
    return builtin_pipeline(delivery_hosts=frozenset({f"127.0.0.1:{receiver.port}"}), delivery_timeout=timeout)


async def submit_to(runs: RunStore, url: str, ending: Ending, seeds: range) -> dict[RunId, Ending]:
    submitted = {}
    for seed in seeds:
        brief: dict[str, Any] = sample_brief(ending, seed)
        brief["delivery"] = {**brief["delivery"], "destination": url}
        run_id, _ = await runs.submit(brief)
        submitted[run_id] = ending
    return submitted


async def test_completed_runs_are_delivered_once_by_key_and_failed_runs_never(
    db: Database, runs: RunStore, tmp_path: Path
) -> None:
    # A third of the requests answer 503 (and are retried); the answers take a few milliseconds.
    faults = Faults(fail_5xx=0.3, latency_median_ms=5, seed=7)
    async with Receiver(tmp_path / "journal.jsonl", faults) as receiver:
        url = f"{receiver.url}/packages"
        endings = await submit_to(runs, url, Ending.COMPLETED, range(40))
        endings |= await submit_to(runs, url, Ending.QC_FAIL, range(40, 45))
        endings |= await submit_to(runs, url, Ending.DELIVERY_FAIL, range(45, 50))
        pipeline = delivering_to(receiver)
        retry = RetryPolicy(attempts=10, first_wait_seconds=0.001, max_wait_seconds=0.01)
        pipeline = replace(pipeline, steps=(*pipeline.steps[:-1], replace(pipeline.spec(Step.DELIVER), retry=retry)))
        async with running_daemon(db, pipeline=pipeline) as daemon:
            statuses = await wait_terminal(db, endings)
            retried = daemon.metrics.registry.get_sample_value(
                "sagad_step_retries_total", {"step": "deliver", "reason": "transient"}
            )
        summary = receiver.summary()
    completed = {run for run, status in statuses.items() if status == "completed"}
    assert completed == {run for run, ending in endings.items() if ending is Ending.COMPLETED}
    assert summary.accepted == {idempotency_key(run): 1 for run in completed}
    assert summary.retracted == []
    assert retried is not None
    assert retried > 0
    assert summary.requests_by_status[503] == retried


async def test_a_package_the_endpoint_refuses_fails_the_run_for_good(
    db: Database, runs: RunStore, tmp_path: Path
) -> None:
    faults = Faults(reject_body=destination_contains("refuse-me"))
    async with Receiver(tmp_path / "journal.jsonl", faults) as receiver:
        refused = await submit_to(runs, f"{receiver.url}/refuse-me", Ending.COMPLETED, range(3))
        accepted = await submit_to(runs, f"{receiver.url}/packages", Ending.COMPLETED, range(3, 6))
        async with running_daemon(db, pipeline=delivering_to(receiver)):
            statuses = await wait_terminal(db, [*refused, *accepted])
        summary = receiver.summary()
    assert {statuses[run] for run in refused} == {"compensated"}
    assert {statuses[run] for run in accepted} == {"completed"}
    status = await shown(db, next(iter(refused)))
    assert status is not None
    assert status.last_error is not None
    assert status.last_error.startswith("deliver: delivery endpoint refused the package: POST http://127.0.0.1:")
    assert "answered 422" in status.last_error
    assert set(summary.accepted) == {idempotency_key(run) for run in accepted}


async def test_a_delivery_whose_answer_never_came_is_retracted_when_the_run_is_compensated(
    db: Database, runs: RunStore, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    # The receiver accepts each package, but answers after the client has given up on it; its
    # retractions time out the same way, so the runs stay compensating, their rows kept.
    async with Receiver(journal, Faults(latency_median_ms=300)) as slow:
        endings = await submit_to(runs, f"{slow.url}/packages", Ending.COMPLETED, range(3))
        pipeline = delivering_to(slow, timeout=0.05)
        pipeline = replace(pipeline, steps=(*pipeline.steps[:-1], replace(pipeline.spec(Step.DELIVER), retry=QUICK)))
        async with running_daemon(db, pipeline=pipeline, undo_retry_seconds=0.2):
            held_up = "SELECT count(*) FROM workflow_runs WHERE compensation_error LIKE 'undo of deliver: %'"
            await wait_count(db, held_up, len(endings), seconds=20)
            # The receiver comes back on the same port, answering at once: the undos go through.
            await slow.__aexit__(None, None, None)
            async with Receiver(journal, port=slow.port) as quick:
                assert set((await wait_terminal(db, endings)).values()) == {"compensated"}
                summary = quick.summary()
    keys = {idempotency_key(run) for run in endings}
    assert set(summary.accepted) == keys  # delivered, though the daemon never heard so
    assert set(summary.retracted) == keys  # and taken back before the run's rows went
    status = await shown(db, next(iter(endings)))
    assert status is not None
    assert status.last_error is not None
    assert "gave up after 2 attempts (claim 1): POST" in status.last_error
    assert "timed out" in status.last_error
    assert status.compensation_error is None


async def test_a_destination_that_is_not_an_allowed_host_fails_without_a_request(
    db: Database, runs: RunStore, tmp_path: Path
) -> None:
    async with Receiver(tmp_path / "journal.jsonl") as receiver:
        endings = await submit_to(runs, f"{receiver.url}/packages", Ending.COMPLETED, range(2))
        async with running_daemon(db):  # the built-in pipeline with no --delivery-hosts
            assert set((await wait_terminal(db, endings)).values()) == {"compensated"}
        summary = receiver.summary()
    assert summary.requests_by_status == {}
    status = await shown(db, next(iter(endings)))
    assert status is not None
    assert status.last_error == (
        f"deliver: delivery to 127.0.0.1:{receiver.port} is not allowed (allowed: none; see --delivery-hosts)"
    )
