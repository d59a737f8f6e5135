"""Group commit's intake: what waits in an inbox, up to a limit, without ever waiting."""

from __future__ import annotations

import anyio
import pytest

from sagad.actors.batching import take_available, take_waiting

pytestmark = pytest.mark.anyio


async def test_take_available_takes_what_waits_up_to_the_limit() -> None:
    send, inbox = anyio.create_memory_object_stream[int](10)
    with send, inbox:
        for n in range(5):
            send.send_nowait(n)
        assert take_available(inbox, 3) == [0, 1, 2]
        assert take_available(inbox, 3) == [3, 4]
        assert take_available(inbox, 3) == []


async def test_take_available_with_no_room_takes_nothing() -> None:
    send, inbox = anyio.create_memory_object_stream[int](10)
    with send, inbox:
        send.send_nowait(1)
        assert take_available(inbox, 0) == []
        assert take_available(inbox, -1) == []
        assert inbox.receive_nowait() == 1


async def test_take_available_from_a_closed_inbox_takes_what_was_left_then_nothing() -> None:
    send, inbox = anyio.create_memory_object_stream[int](10)
    with inbox:
        with send:
            send.send_nowait(1)
            send.send_nowait(2)
        assert take_available(inbox, 10) == [1, 2]
        assert take_available(inbox, 10) == []


async def test_take_waiting_puts_the_first_in_front_and_counts_it_in_the_limit() -> None:
    send, inbox = anyio.create_memory_object_stream[int](10)
    with send, inbox:
        for n in range(1, 6):
            send.send_nowait(n)
        assert take_waiting(0, inbox, 3) == [0, 1, 2]
        assert take_waiting(9, inbox, 1) == [9]
        assert take_waiting(8, inbox, 10) == [8, 3, 4, 5]


async def test_take_waiting_from_an_empty_or_closed_inbox_is_the_first_alone() -> None:
    send, inbox = anyio.create_memory_object_stream[int](1)
    with inbox:
        with send:
            assert take_waiting(7, inbox, 5) == [7]
        assert take_waiting(7, inbox, 5) == [7]
