"""The client API against a real database: submit, get, wait, list, cancel, retry, intake."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from sagad import (
    CancelOutcome,
    Client,
    InvalidBrief,
    InvalidRequest,
    RetryOutcome,
    RunFilter,
    RunNotFound,
    RunStatus,
    SyncClient,
    WaitTimedOut,
)
from sagad.store.db import Database

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).parents[2] / "examples"
BRIEF = json.loads((EXAMPLES / "brief.json").read_text())


async def finish(db: Database, run_id: object, status: str) -> None:
    """End a run as a daemon would (the terminal transition that wakes waiters)."""
    await db.fetch(
        "UPDATE workflow_runs SET status = $2, available_at = NULL, finished_at = now(),"
        " failed_step = CASE WHEN $2 = 'compensated' THEN 'qc_evaluate' END WHERE id = $1",
        run_id,
        status,
    )


async def test_submit_get_and_idempotency(database_url: str) -> None:
    async with Client(database_url) as client:
        first = await client.submit(BRIEF, idempotency_key="order-1")
        assert await client.submit(json.dumps(BRIEF), idempotency_key="order-1") == first
        run = await client.get(str(first))
        assert run.status is RunStatus.PENDING
        assert run.idempotency_key == "order-1"
        assert run.current_step == "normalize_brief"


async def test_submit_many_is_checked_whole_before_anything_is_stored(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        with pytest.raises(InvalidBrief, match=r"^brief 1: field 'tone'"):
            await client.submit_many([BRIEF, {**BRIEF, "tone": ""}])
        assert await db.fetch("SELECT id FROM workflow_runs") == []
        ids = await client.submit_many([BRIEF, (BRIEF, "k-2"), (BRIEF, "k-2")])
        assert ids[1] == ids[2] and len(set(ids)) == 2


@pytest.mark.parametrize(
    ("brief", "message"),
    [
        ({**BRIEF, "word_limit": 10}, "field 'word_limit'"),
        ("[1]", "must be a JSON object"),
        (b"\xff", "not UTF-8"),
        ({"x": float("nan")}, "not JSON"),
        ("x" * 70_000, "byte limit"),
    ],
)
async def test_a_bad_brief_is_refused_as_the_cli_refuses_it(database_url: str, brief: object, message: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(InvalidBrief, match=message):
            await client.submit(brief)  # type: ignore[arg-type]


async def test_bad_ids_and_unknown_runs_are_one_clear_error(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(InvalidRequest, match="not a run id"):
            await client.get("nope")
        with pytest.raises(RunNotFound, match="no run 00000000-0000-0000-0000-000000000000"):
            await client.get("00000000-0000-0000-0000-000000000000")
        with pytest.raises(InvalidRequest, match="idempotency key"):
            await client.submit(BRIEF, idempotency_key="")
        with pytest.raises(InvalidRequest, match="limit"):
            await client.list(limit=0)
        with pytest.raises(InvalidRequest, match="cursor"):
            await client.list(cursor="zzz")
        pending = RunFilter(statuses=frozenset({RunStatus.PENDING}))
        for page, reason, where, message in (
            (0, "x", pending, "page must be 1 to 1000"),
            (10, "", pending, "reason must be 1 to 500"),
            (10, "x", RunFilter(since=datetime.now()), "time zone"),
        ):
            with pytest.raises(InvalidRequest, match=message):
                [_ async for _ in client.cancel_where(where, reason, page=page)]


async def test_wait_is_woken_by_the_terminal_transition(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        run_id = await client.submit(BRIEF)
        with pytest.raises(WaitTimedOut, match="still pending"):
            await client.wait(run_id, 0.05)
        async with anyio.create_task_group() as tg:

            async def end_it() -> None:
                await anyio.sleep(0.2)
                await finish(db, run_id, "completed")

            tg.start_soon(end_it)
            started = anyio.current_time()
            with anyio.fail_after(3):  # well under the 5 s re-read: the notification woke it
                run = await client.wait(run_id, 30)
        assert run.status is RunStatus.COMPLETED
        assert anyio.current_time() - started < 3


async def test_list_filters_and_pages_newest_first_without_repeats(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        # Newest first to the millisecond (ids are UUIDv7); runs of one millisecond in id order.
        ids = sorted([await client.submit(BRIEF) for _ in range(7)])
        await finish(db, ids[1], "compensated")
        await db.fetch("UPDATE workflow_runs SET last_error = 'qc_evaluate: score 0.2 below 0.5' WHERE id = $1", ids[1])
        page = await client.list(limit=3)
        assert [run.run_id for run in page.runs] == ids[::-1][:3]
        seen = list(page.runs)
        cursor = page.next_cursor
        late = await client.submit(BRIEF)  # added while paging: never in a later page
        while cursor is not None:
            page = await client.list(limit=3, cursor=cursor)
            seen += page.runs
            cursor = page.next_cursor
        assert [run.run_id for run in seen] == ids[::-1]
        assert late not in {run.run_id for run in seen}
        failed = await client.list(RunFilter(statuses=frozenset({RunStatus.COMPENSATED})))
        assert [run.run_id for run in failed.runs] == [ids[1]]
        assert [r.run_id for r in (await client.list(RunFilter(error_contains="BELOW"))).runs] == [ids[1]]
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        assert await client.count(RunFilter(since=hour_ago)) == 8
        assert await client.count(RunFilter(until=hour_ago)) == 0
        with pytest.raises(InvalidRequest, match="time zone"):
            await client.count(RunFilter(since=datetime.now()))


async def test_cancel_of_a_pending_run_compensates_it_at_once(database_url: str) -> None:
    async with Client(database_url) as client:
        pending, done = await client.submit(BRIEF), await client.submit(BRIEF)
        [result] = await client.cancel([pending], "client withdrew the brief", by="ops@test")
        assert result.outcome is CancelOutcome.COMPENSATED
        run = await client.wait(pending, 1)
        assert run.status is RunStatus.COMPENSATED
        assert (run.last_error, run.failed_step) == ("cancelled: client withdrew the brief", "normalize_brief")
        assert (run.cancel_reason, run.cancelled_by) == ("client withdrew the brief", "ops@test")
        [again] = await client.cancel([pending], "twice")
        assert again.outcome is CancelOutcome.ALREADY_COMPENSATED
        assert (await client.list(RunFilter(cancelled=True))).runs[0].run_id == pending
        with pytest.raises(RunNotFound):
            await client.cancel([done, "00000000-0000-0000-0000-000000000000"], "x")
        assert (await client.get(done)).status is RunStatus.PENDING  # nothing changed


async def test_cancel_refuses_a_completed_run_and_marks_a_running_one(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        completed, running = await client.submit(BRIEF), await client.submit(BRIEF)
        await finish(db, completed, "completed")
        await db.fetch("UPDATE workflow_runs SET status = 'running', claimed_by = 'w1' WHERE id = $1", running)
        results = {r.run_id: r.outcome for r in await client.cancel([completed, running], "withdrawn")}
        assert results == {completed: CancelOutcome.REFUSED_COMPLETED, running: CancelOutcome.REQUESTED}
        assert (await client.get(completed)).cancel_requested_at is None
        marked = await client.get(running)
        assert marked.status is RunStatus.RUNNING and marked.cancel_requested_at is not None


async def test_retry_creates_one_linked_run_however_often_it_is_asked(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        failed, pending = await client.submit(BRIEF), await client.submit(BRIEF)
        await finish(db, failed, "compensated")
        [first] = await client.retry([failed])
        assert first.outcome is RetryOutcome.CREATED and first.new_run is not None
        [second] = await client.retry([failed, failed])
        assert (second.outcome, second.new_run) == (RetryOutcome.ALREADY_RETRIED, first.new_run)
        assert (await client.get(failed)).retried_by == first.new_run
        new = await client.get(first.new_run)
        assert new.retry_of == failed and new.status is RunStatus.PENDING
        [refused] = await client.retry([pending])
        assert refused.outcome is RetryOutcome.REFUSED_NOT_COMPENSATED
        briefs = await db.fetch("SELECT DISTINCT brief FROM workflow_runs WHERE id = ANY($1)", [failed, first.new_run])
        assert len(briefs) == 1


async def test_intake_pause_is_recorded_with_who_and_why(database_url: str) -> None:
    async with Client(database_url) as client:
        assert not (await client.intake()).paused
        state = await client.pause_intake("deploy", by="ops@test")
        assert (state.paused, state.changed_by, state.reason) == (True, "ops@test", "deploy")
        assert not (await client.resume_intake()).paused


async def test_a_client_uses_at_most_two_connections(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        run_id = await client.submit(BRIEF)
        with pytest.raises(WaitTimedOut):
            await client.wait(run_id, 0.01)
        [row] = await db.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = ''"
        )
        # The test's own pool is counted too (one connection opened by the fixture).
        assert row["n"] <= 3


def test_the_sync_facade_submits_and_reads(database_url: str) -> None:
    with SyncClient(database_url) as client:
        run_id = client.submit(BRIEF)
        assert client.get(run_id).status is RunStatus.PENDING
        assert [run.run_id for run in client.list().runs] == [run_id]
        [result] = client.cancel([run_id], "no longer wanted")
        assert result.outcome is CancelOutcome.COMPENSATED
        others = {client.submit(BRIEF) for _ in range(3)}
        results = client.cancel_where(RunFilter(statuses=frozenset({RunStatus.PENDING})), "bad batch", page=2)
        assert {r.run_id: r.outcome for r in results} == dict.fromkeys(others, CancelOutcome.COMPENSATED)


async def test_history_records_retries_and_is_pruned_by_run_age(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        failed = await client.submit(BRIEF)
        await finish(db, failed, "compensated")
        [retried] = await client.retry([failed])
        assert retried.new_run is not None
        [event] = await client.history(retried.new_run)
        assert (event.event, event.detail) == ("retry", str(failed))
        assert [e.event for e in await client.history(failed)] == ["compensated"]
        assert await client.prune_history(timedelta(hours=1)) == 0
        await db.fetch("UPDATE workflow_runs SET submitted_at = now() - interval '2 days' WHERE id = $1", failed)
        # Pruning goes by run id (UUIDv7: the submission time); an old run's events go, a new one's stay.
        await db.fetch(
            "INSERT INTO run_history (run_id, at, event) VALUES ('00000000-0000-7000-8000-000000000000', now(), 'x')"
        )
        assert await client.prune_history(timedelta(hours=1)) == 1
        assert len(await client.history(retried.new_run)) == 1


async def test_a_retry_chain_links_each_run_to_the_next_and_never_doubles(database_url: str, db: Database) -> None:
    async with Client(database_url) as client:
        first = await client.submit(BRIEF)
        chain = [first]
        for _ in range(3):
            await finish(db, chain[-1], "compensated")
            [result] = await client.retry([chain[-1]])
            assert result.new_run is not None
            chain.append(result.new_run)
        # Retrying any run of the chain again gives the run that already retries it.
        again = await client.retry(chain[:-1])
        assert [r.new_run for r in again] == chain[1:]
        runs = [await client.get(run_id) for run_id in chain]
        assert [r.retry_of for r in runs] == [None, *chain[:-1]]
        assert [r.retried_by for r in runs] == [*chain[1:], None]
        assert await client.count() == len(chain)


async def test_paging_while_runs_are_added_never_skips_or_repeats_a_run(database_url: str) -> None:
    async with Client(database_url) as client, Client(database_url) as submitter:
        before = set(await submitter.submit_many([BRIEF] * 200))
        seen: list[object] = []
        adding = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def keep_adding() -> None:
                adding.set()
                for _ in range(20):
                    await submitter.submit_many([BRIEF] * 10)

            tg.start_soon(keep_adding)
            await adding.wait()
            cursor: str | None = None
            while True:
                page = await client.list(limit=7, cursor=cursor)
                seen += [run.run_id for run in page.runs]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        assert len(seen) == len(set(seen))  # no run twice
        assert before <= set(seen)  # none of the runs there when paging began skipped


async def test_resume_makes_a_run_held_up_by_an_undo_claimable_now_and_nothing_else(
    database_url: str, db: Database
) -> None:
    async with Client(database_url) as client:
        held_up, pending = await client.submit(BRIEF), await client.submit(BRIEF)
        await db.fetch(
            "UPDATE workflow_runs SET status = 'compensating', failed_step = 'deliver', last_error = 'deliver: 503',"
            " compensation_error = 'undo of deliver: 503', available_at = now() + interval '1 hour' WHERE id = $1",
            held_up,
        )
        waiting = await client.list(RunFilter(waiting_on_undo=True))
        assert [run.run_id for run in waiting.runs] == [held_up]
        assert await client.resume([held_up, pending]) == {held_up}
        [row] = await db.fetch("SELECT available_at <= now() AS now FROM workflow_runs WHERE id = $1", held_up)
        assert row["now"]
        assert await client.resume([held_up]) == set()  # already claimable: nothing to do
