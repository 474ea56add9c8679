"""Natural batching: a batch is what has arrived, never what a timer waited for.

faust's `Stream.take_events(n, within=t)` waits up to `t` on every turn unless `n` events are
there: one event at an idle worker costs the whole window (about a second by default). Here a
batch is yielded as soon as one event is there, together with every event already fetched and
queued behind it (up to `max_`); events arriving while a batch is applied form the next one. So
an idle worker applies an event at once, and a busy one batches as much as it falls behind.
`linger` caps how long the queue may keep feeding one batch.

Acknowledgements work as in `take_events`: the stream's own acks are off while this runs, and the
events of a batch are acknowledged once the consumer of the batch has finished with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any


async def take_ready(stream: Any, max_: int, linger: float) -> AsyncIterator[Sequence[Any]]:
    """Batches of `stream`'s events (faust EventT), each yielded as soon as it holds one, at most `max_`."""
    buffer: list[Any] = []
    arrived = asyncio.Event()  # the buffer holds an event
    consumed = asyncio.Event()  # the last batch is done with: the buffer may fill again
    consumed.set()
    loop = asyncio.get_running_loop()

    async def add_to_buffer(value: Any) -> Any:
        # Holds the stream while a batch is being applied, or while a full buffer waits for it.
        await consumed.wait()
        event = stream.current_event
        if event is None:
            raise RuntimeError("an event arrived without a current event")
        buffer.append(event)
        arrived.set()
        if len(buffer) >= max_:
            consumed.clear()
        return value

    acks_were_enabled = stream.enable_acks
    stream.enable_acks = False
    channel = aiter(stream.channel)  # the channel the stream reads: its queue holds what is fetched
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel)
    queue = getattr(channel, "queue", None)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived, timeout=1.0)
            if not buffer:
                continue
            # What is fetched and queued already belongs with this batch: let the stream move it in.
            deadline = loop.time() + linger
            while len(buffer) < max_ and queue is not None and queue.qsize() and loop.time() < deadline:
                await asyncio.sleep(0)
            consumed.clear()
            batch = list(buffer)
            try:
                yield batch
            finally:
                buffer.clear()
                arrived.clear()
                for event in batch:
                    await stream.ack(event)
                consumed.set()
    finally:
        stream.enable_acks = acks_were_enabled
        stream._processors.remove(add_to_buffer)
