"""The delivery receiver as a process: its address line, its options, clean stops, and restarts mid-load."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from sagad.loadtest.journal import JournalSummary, read_journal
from sagad.loadtest.receiver import IDEMPOTENCY_KEY, SUMMARY_PATH
from tests.processes import REPO
from tests.receiver import LISTENING, ReceiverProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PACKAGE = {"run_id": "r-1", "destination": "acme/blog", "words": 1200}


async def post(client: httpx.AsyncClient, key: str, destination: str = "acme/blog") -> httpx.Response:
    return await client.post(
        "/deliveries", json={**PACKAGE, "destination": destination}, headers={IDEMPOTENCY_KEY: key}
    )


async def test_port_zero_prints_the_bound_address_and_sigterm_exits_0(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path / "journal.jsonl")
    async with receiver:
        assert LISTENING.fullmatch(receiver.listening_line)
        assert receiver.url.startswith("http://127.0.0.1:")
        assert receiver.port > 0
        async with httpx.AsyncClient(base_url=receiver.url) as client:
            assert (await client.get(SUMMARY_PATH)).json()["accepted"] == {}
        assert await receiver.stop(signal.SIGTERM) == 0
        await receiver.start()
        assert await receiver.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_a_restarted_receiver_recognises_what_it_accepted(tmp_path: Path, signum: signal.Signals) -> None:
    keys = [f"k{i}" for i in range(20)]
    async with ReceiverProcess(tmp_path / "journal.jsonl") as receiver:
        async with httpx.AsyncClient(base_url=receiver.url) as client:
            assert [(await post(client, key)).status_code for key in keys] == [201] * 20
        port = receiver.port
        await receiver.restart(signum)
        assert receiver.port == port
        async with httpx.AsyncClient(base_url=receiver.url) as client:
            assert [(await post(client, key)).status_code for key in keys] == [200] * 20
            assert (await post(client, "new")).status_code == 201
    assert read_journal(tmp_path / "journal.jsonl").accepted == {key: 1 for key in [*keys, "new"]}


async def test_a_receiver_killed_again_and_again_mid_load_accepts_every_key_once(tmp_path: Path) -> None:
    """Clients retry until answered; the receiver is SIGKILLed and restarted after every 80 answers.

    Some answers come after the client's timeout (50 ms; latency p99 100 ms): the receiver accepted
    those, and the client's retry must be recognised, across restarts too.
    """
    keys = [f"k{i}" for i in range(400)]
    kills_due = [anyio.Event() for _ in range(4)]
    answers: dict[str, int] = {}
    limit = anyio.Semaphore(20)

    async def deliver(client: httpx.AsyncClient, key: str) -> None:
        async with limit:
            while True:
                try:
                    response = await post(client, key)
                except httpx.TransportError:  # timed out, killed or restarting: it may have been accepted
                    await anyio.sleep(0.02)
                    continue
                if response.status_code in (200, 201):
                    break
        answers[key] = response.status_code
        if len(answers) % 80 == 0 and len(answers) // 80 <= len(kills_due):
            kills_due[len(answers) // 80 - 1].set()

    faults = ["--fail-5xx", "0.05", "--latency-median-ms", "5", "--latency-p99-ms", "100", "--seed", "2"]
    async with ReceiverProcess(tmp_path / "journal.jsonl", *faults) as receiver:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=0.05) as client, anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(deliver, client, key)
            with anyio.fail_after(60):
                for due in kills_due:
                    await due.wait()
                    await receiver.restart(signal.SIGKILL)
        async with httpx.AsyncClient(base_url=receiver.url) as client:
            served = JournalSummary.from_json((await client.get(SUMMARY_PATH)).json())

    summary = read_journal(tmp_path / "journal.jsonl")
    assert summary == served
    assert summary.accepted == {key: 1 for key in keys}
    assert set(answers.values()) <= {200, 201}
    assert Counter(answers.values())[200] > 0  # some acceptances the clients did not see were recognised


async def test_the_fault_options_reach_the_receiver(tmp_path: Path) -> None:
    options = ["--reject-matching", "reject", "--reject-key", "listed", "--latency-median-ms", "100"]
    async with (
        ReceiverProcess(tmp_path / "journal.jsonl", *options) as receiver,
        httpx.AsyncClient(base_url=receiver.url) as client,
    ):
        started = time.perf_counter()
        assert (await post(client, "ok")).status_code == 201
        assert time.perf_counter() - started >= 0.1
        assert (await post(client, "listed")).status_code == 422
        assert (await post(client, "matching", destination="acme/reject-me")).status_code == 422
    assert read_journal(tmp_path / "journal.jsonl").accepted == {"ok": 1}


@pytest.mark.parametrize(
    "options", [["--fail-5xx", "1.5"], ["--latency-median-ms", "50", "--latency-p99-ms", "10"], ["--fail-429", "x"]]
)
async def test_unusable_options_exit_2_with_one_line(tmp_path: Path, options: list[str]) -> None:
    command = [sys.executable, "-m", "sagad.loadtest.receiver", "--journal", str(tmp_path / "j.jsonl"), *options]
    result = await anyio.run_process(command, cwd=REPO, check=False)
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
