"""The delivery receiver in-process, over real HTTP on loopback: acceptance, retraction, faults, journal."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from sagad.loadtest.faults import Faults, destination_contains
from sagad.loadtest.journal import JournalSummary, read_entries, read_journal
from sagad.loadtest.receiver import IDEMPOTENCY_KEY, SUMMARY_PATH, Receiver

pytestmark = pytest.mark.anyio

PACKAGE = {"run_id": "r-1", "destination": "acme/blog", "words": 1200}


@asynccontextmanager
async def receiving(journal: Path, faults: Faults | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A receiver on ``journal``, and a client of it."""
    async with Receiver(journal, faults) as receiver, httpx.AsyncClient(base_url=receiver.url) as client:
        yield client


def key_header(key: str) -> dict[str, str]:
    return {IDEMPOTENCY_KEY: key}


async def post(client: httpx.AsyncClient, key: str, package: object = PACKAGE) -> httpx.Response:
    return await client.post("/deliveries", json=package, headers=key_header(key))


async def summary_of(client: httpx.AsyncClient) -> JournalSummary:
    response = await client.get(SUMMARY_PATH)
    assert response.status_code == 200
    return JournalSummary.from_json(response.json())


async def post_each(client: httpx.AsyncClient, keys: list[str]) -> dict[str, int]:
    """POST a package under every key, 20 at a time; the status each got."""
    statuses: dict[str, int] = {}
    limit = anyio.Semaphore(20)

    async def deliver(key: str) -> None:
        async with limit:
            statuses[key] = (await post(client, key)).status_code

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(deliver, key)
    return statuses


async def test_the_first_post_is_accepted_and_a_repeat_is_recognised_and_counted_once(tmp_path: Path) -> None:
    async with receiving(tmp_path / "journal.jsonl") as client:
        first = await post(client, "run-1/package")
        again = await post(client, "run-1/package")
        elsewhere = await client.post("/other/path", json=PACKAGE, headers=key_header("run-1/package"))
        summary = await summary_of(client)

    assert first.status_code == 201
    assert again.status_code == elsewhere.status_code == 200
    assert again.json() == first.json()  # the first acceptance, not a new one
    assert summary.accepted == {"run-1/package": 1}
    assert summary.recognised == {"run-1/package": 2}


async def test_concurrent_posts_of_one_key_accept_it_once(tmp_path: Path) -> None:
    faults = Faults(latency_median_ms=20, latency_p99_ms=80, seed=1)
    async with receiving(tmp_path / "journal.jsonl", faults) as client:
        statuses: list[int] = []

        async def deliver() -> None:
            statuses.append((await post(client, "contested")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(deliver)

    assert Counter(statuses) == {201: 1, 200: 19}
    assert read_journal(tmp_path / "journal.jsonl").accepted == {"contested": 1}


async def test_a_post_without_the_key_is_refused_and_accepts_nothing(tmp_path: Path) -> None:
    async with receiving(tmp_path / "journal.jsonl") as client:
        missing = await client.post("/deliveries", json=PACKAGE)
        empty = await client.post("/deliveries", json=PACKAGE, headers=key_header(""))
        delete = await client.delete("/deliveries")
        summary = await summary_of(client)

    assert missing.status_code == empty.status_code == delete.status_code == 400
    assert IDEMPOTENCY_KEY in missing.json()["error"]
    assert summary.accepted == {}
    assert summary.requests_by_status == {400: 3}


@pytest.mark.parametrize("body", [b'{"destination": "acme', b"\xff\xfe", b"[1, 2]", b""])
async def test_a_body_that_is_not_a_json_object_is_refused(tmp_path: Path, body: bytes) -> None:
    async with receiving(tmp_path / "journal.jsonl") as client:
        response = await client.post("/deliveries", content=body, headers=key_header("k"))
        summary = await summary_of(client)

    assert response.status_code == 400
    assert summary.accepted == {}
    assert [entry.key for entry in read_entries(tmp_path / "journal.jsonl")] == ["k"]


async def test_delete_retracts_an_accepted_key_for_good(tmp_path: Path) -> None:
    async with receiving(tmp_path / "journal.jsonl") as client:
        await post(client, "k")
        retract = await client.delete("/deliveries", headers=key_header("k"))
        retract_again = await client.delete("/deliveries", headers=key_header("k"))
        unknown = await client.delete("/deliveries", headers=key_header("never-posted"))
        post_after = await post(client, "k")
        summary = await summary_of(client)

    assert (retract.status_code, retract_again.status_code, unknown.status_code) == (204, 204, 404)
    assert post_after.status_code == 410  # a retracted package is not delivered again
    assert summary.accepted == {"k": 1}
    assert summary.retracted == ["k"]


async def test_transient_failures_answer_as_configured_and_accept_nothing(tmp_path: Path) -> None:
    faults = Faults(fail_5xx=0.2, fail_429=0.1, seed=7)
    keys = [f"k{i}" for i in range(600)]
    async with receiving(tmp_path / "journal.jsonl", faults) as client:
        statuses = await post_each(client, keys)
        summary = await summary_of(client)

    by_status = Counter(statuses.values())
    assert set(by_status) == {201, 503, 429}
    assert 80 <= by_status[503] <= 160  # 120 expected; binomial sd 10
    assert 30 <= by_status[429] <= 90  # 60 expected; binomial sd 7
    assert summary.accepted == {key: 1 for key, status in statuses.items() if status == 201}
    assert summary.requests_by_status == dict(sorted(by_status.items()))


async def test_a_retry_after_a_transient_failure_is_accepted(tmp_path: Path) -> None:
    async with receiving(tmp_path / "journal.jsonl", Faults(fail_5xx=1.0)) as client:
        assert (await post(client, "k")).status_code == 503
        assert (await client.delete("/deliveries", headers=key_header("k"))).status_code == 503
    async with receiving(tmp_path / "journal.jsonl") as client:
        assert (await post(client, "k")).status_code == 201
    assert read_journal(tmp_path / "journal.jsonl").accepted == {"k": 1}


async def test_rejects_answer_422_every_time_and_accept_nothing(tmp_path: Path) -> None:
    faults = Faults(reject=0.25, reject_keys=frozenset({"listed"}), reject_body=destination_contains("reject"), seed=3)
    keys = [f"k{i}" for i in range(400)]
    async with receiving(tmp_path / "journal.jsonl", faults) as client:
        statuses = await post_each(client, keys)
        retried = await post_each(client, keys)
        listed = await post(client, "listed")
        matching = await post(client, "other", {**PACKAGE, "destination": "acme/reject-me"})
        summary = await summary_of(client)

    rejected = {key for key, status in statuses.items() if status == 422}
    assert 70 <= len(rejected) <= 130  # 100 expected; binomial sd 9
    assert {key for key, status in retried.items() if status == 422} == rejected  # a package is rejected for what it is
    assert listed.status_code == matching.status_code == 422
    assert matching.json()["reason"] == "the package matches the reject rule"
    assert set(summary.accepted) == set(keys) - rejected


async def test_latency_is_applied_to_every_answer(tmp_path: Path) -> None:
    async with receiving(tmp_path / "journal.jsonl", Faults(latency_median_ms=150)) as client:
        for key in ("a", "b", "c"):
            started = time.perf_counter()
            await post(client, key)
            assert time.perf_counter() - started >= 0.15
        started = time.perf_counter()
        await client.delete("/deliveries", headers=key_header("a"))
        assert time.perf_counter() - started >= 0.15


async def test_an_answer_written_after_the_client_gave_up_is_an_acceptance(tmp_path: Path) -> None:
    """The client times out at 50 ms; the receiver answers at 300 ms and that answer accepts."""
    async with receiving(tmp_path / "journal.jsonl", Faults(latency_median_ms=300)) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post("/deliveries", json=PACKAGE, headers=key_header("late"), timeout=0.05)
        # Sent after the timeout and delayed as long: decided after the first request was.
        retry = await post(client, "late")

    assert retry.status_code == 200
    first, second = read_entries(tmp_path / "journal.jsonl")
    assert (first.status, first.client_gone) == (201, True)
    assert (second.status, second.client_gone) == (200, False)


async def test_a_receiver_stopped_while_delaying_has_not_accepted(tmp_path: Path) -> None:
    stop = anyio.Event()

    async def serve(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        async with Receiver(tmp_path / "journal.jsonl", Faults(latency_median_ms=10_000)) as receiver:
            task_status.started(receiver.url)
            await stop.wait()

    async def deliver(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            # The receiver closed the connection after the request was in: not refused, never answered.
            with pytest.raises(httpx.RemoteProtocolError):
                await post(client, "never-answered")

    async with anyio.create_task_group() as tg:
        url = await tg.start(serve)
        tg.start_soon(deliver, url)
        await anyio.sleep(0.3)  # no event tells that a request waits out its latency; 10 s is far off
        stop.set()

    assert read_journal(tmp_path / "journal.jsonl").accepted == {}


async def test_the_summary_endpoint_and_the_journal_file_agree(tmp_path: Path) -> None:
    faults = Faults(fail_5xx=0.1, fail_429=0.1, reject=0.1, seed=11)
    receiver = Receiver(tmp_path / "journal.jsonl", faults)
    async with receiver, httpx.AsyncClient(base_url=receiver.url) as client:
        keys = [f"k{i}" for i in range(200)]
        await post_each(client, keys + keys[:50])
        for key in keys[:30]:
            await client.delete("/deliveries", headers=key_header(key))
        await client.post("/deliveries", json=PACKAGE)
        served = await summary_of(client)
        assert served == read_journal(tmp_path / "journal.jsonl")  # while it runs
        assert served == receiver.summary()
    assert served == read_journal(tmp_path / "journal.jsonl")  # after it stopped
    assert sum(served.requests_by_status.values()) == 200 + 50 + 30 + 1


async def test_a_torn_last_line_is_dropped_and_the_journal_goes_on(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    async with receiving(journal) as client:
        await post(client, "before")
    with journal.open("a") as file:
        file.write('{"at":1.0,"method":"POST","path":"/x","key":"torn","sta')  # the process died mid-write
    assert read_journal(journal).accepted == {"before": 1}

    async with receiving(journal) as client:
        assert (await post(client, "before")).status_code == 200
        assert (await post(client, "after")).status_code == 201
    assert read_journal(journal).accepted == {"after": 1, "before": 1}
