"""Natural batching: a batch is what has arrived, never what a timer waited for.

faust's `Stream.take_events(n, within=t)` yields a batch when `n` events are buffered or `t` has
passed, so one event at an idle worker waited the whole window (a second by default). `take_ready`
is the same buffering with another condition for yielding:

- a batch is yielded as soon as the buffer holds an event, with every event already fetched and
  queued behind it (the channel's queue, what faust has handed to this agent), up to `max_`;
- while a batch is out (being settled) the stream is held, as `take_events` holds it: events that
  arrive meanwhile wait in the queue and form the next batch. So an idle worker's batches are
  single events, a busy one's grow as far as it falls behind;
- `cap` bounds how long a batch keeps taking in queued events: never a wait for more to come.

Acknowledgements are `take_events`': the stream's own acks are off while this runs, and a batch's
events are acknowledged when the loop body hands control back for the next one (or the generator
is closed, when the stream stops: the commit is clamped to the positions the database vouches for,
streamsync/agents/positioning.py). Like faust's buffering generators, it is registered with the
stream so that stopping the stream closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

RECHECK_SECONDS = 1.0  # an idle loop looks at should_stop this often (as take_events does, every window)


def take_ready(stream: Any, max_: int, cap: float) -> AsyncGenerator[Sequence[Any], None]:
    """Batches of `stream`'s events (faust `EventT`), each yielded once it holds one, at most `max_`.

    `stream` is a `faust.Stream`; its `take_events` is missing from `StreamT`, and so is what this
    uses of it.
    """
    batches = _take_ready(stream, max_, cap)
    # What faust's @_tracks_buffer_agen does for take_events: Stream.on_stop closes it.
    stream._active_agens.add(batches)
    return batches


async def _take_ready(stream: Any, max_: int, cap: float) -> AsyncGenerator[Sequence[Any], None]:
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    arrived = asyncio.Event()  # the buffer holds an event
    room = asyncio.Event()  # set when a batch was taken out of the buffer and settled
    out = False  # a batch is out: the stream is held until it is settled
    channel = aiter(stream.channel)  # the channel the stream reads (already an iterator: the same one)
    queue = channel.queue  # what is fetched and handed to this agent, not yet taken by the stream

    async def add_to_buffer(value: Any) -> Any:
        try:
            # Held while a batch is out or the buffer is full; the condition is checked again on
            # every wake-up, so a batch taken out meanwhile holds it once more.
            while (out or len(events) >= max_) and not stream.should_stop:
                room.clear()
                await stream.wait(room)
            event = stream.current_event
            if event is None:
                raise RuntimeError("an event reached the batch buffer without a current event")
            events.append(event)
            arrived.set()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # as take_events: the stream crashes, and the agent with it
            stream.log.exception("Error adding to take buffer: %r", error)
            await stream.crash(error)
        return value

    # This generator acknowledges events itself, once they are settled.
    acks_were_enabled = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel)  # the stream is consumed in the background, into the buffer
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived, timeout=RECHECK_SECONDS)
            if not events:
                continue
            # What is already queued belongs with this batch: let the stream move it in.
            deadline = loop.time() + cap
            while len(events) < max_ and not queue.empty() and loop.time() < deadline:
                await asyncio.sleep(0)
            out = True
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                arrived.clear()
                for event in batch:
                    await stream.ack(event)
                out = False
                room.set()
    finally:
        stream.enable_acks = acks_were_enabled
        stream._processors.remove(add_to_buffer)
