"""What every agent of one worker process shares, and the loop each agent runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from streamsync.agents.batching import take_ready
from streamsync.agents.dbthread import DatabaseThread
from streamsync.agents.positioning import Positions
from streamsync.agents.settler import Settler, crash
from streamsync.agents.stalls import Stalls
from streamsync.agents.wire import KafkaWire
from streamsync.contract.records import Origin
from streamsync.contract.topics import events_topic
from streamsync.settings import StreamsyncSettings
from streamsync.sync.settle import Settled


@dataclass
class Runtime:
    """The worker's app, settings, database thread for Nautobot, Kafka wire and positions."""

    app: faust.App
    settings: StreamsyncSettings
    db: DatabaseThread
    wire: KafkaWire
    positions: Positions
    # The largest record this worker can write again (state records, dead letters).
    max_bytes: int
    stalls: Stalls = field(default_factory=Stalls)


def events_channel(runtime: Runtime, system: str) -> Any:
    """`<prefix>.<system>.events` as an agent reads it: raw key and value bytes, decoded by the agent itself."""
    settings = runtime.settings
    return runtime.app.topic(
        events_topic(system, settings.topic_prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )


def run_agent(runtime: Runtime, name: str, channel: Any, settler: Settler, settled: Callable[[Settled], None]) -> None:
    """Add agent `name`: batches from `channel`, each settled before the next is taken.

    A batch is what has arrived by the time the previous one is settled (`take_ready`), up to
    `batch_size`: an idle agent settles an event as soon as it arrives.

    The loop body returns only once its batch is settled; anything raised in it or in the stream
    beneath it ends the worker with a non-zero status (`crash`), before faust could acknowledge
    anything: no live process that consumes nothing, no record acknowledged unsettled. A worker
    told to stop lets the cancellation through: what it had not settled is settled by the next.
    """
    app, settings = runtime.app, runtime.settings
    runtime.positions.register(name, channel.get_topic_name())

    async def agent(stream: Any) -> None:  # faust.Stream
        try:
            # Natural batching: what has arrived, at once; batch_timeout only caps how long a batch
            # keeps taking in what is already queued (streamsync/agents/batching.py).
            async for batch in take_ready(stream, settings.batch_size, settings.batch_timeout):
                try:
                    for part in await settler.settle([Origin.of(event.message) for event in batch]):
                        settled(part)
                except asyncio.CancelledError:
                    if not app.should_stop:
                        crash(name, asyncio.CancelledError("the agent was cancelled"))
                    raise
                except BaseException as error:
                    crash(name, error)
        except asyncio.CancelledError:
            if not app.should_stop:
                crash(name, asyncio.CancelledError("the agent was cancelled"))
            raise
        except BaseException as error:
            crash(name, error)
        if not app.should_stop:
            crash(name, RuntimeError("the agent's stream ended"))

    # concurrency=1: batches of one agent are settled one after the other, in order.
    app.agent(channel, name=name, concurrency=1)(agent)
