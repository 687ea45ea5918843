"""writer.enqueue and writer.take_batch: how writes reach a group-commit writer."""

from __future__ import annotations

import trio
import trio.testing

from mailstack.store.writer import enqueue, take_batch


async def test_enqueue_with_room_does_not_yield_and_waits_when_full() -> None:
    send, receive = trio.open_memory_channel[int](2)
    with trio.testing.assert_no_checkpoints():
        await enqueue(send, 1)
        await enqueue(send, 2)
    queued_third = trio.Event()

    async def third() -> None:
        await enqueue(send, 3)  # full: waits for the writer to take one
        queued_third.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not queued_third.is_set()
        # Taking from the channel lets the waiting write in, behind the others.
        assert take_batch(receive.receive_nowait(), receive, 10) == [1, 2, 3]
        await queued_third.wait()


async def test_take_batch_stops_at_max_batch() -> None:
    send, receive = trio.open_memory_channel[int](10)
    for item in range(5):
        send.send_nowait(item)
    first = receive.receive_nowait()
    assert take_batch(first, receive, 3) == [0, 1, 2]
    assert take_batch(receive.receive_nowait(), receive, 3) == [3, 4]
