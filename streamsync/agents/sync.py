"""The sync agent: the hot path from a Kafka batch to a Nautobot commit.

    take_events(n, within=t)  →  decode  →  engine.apply (one DB thread)  →  ack → offsets committed

faust acks the whole buffered batch when the loop body returns, and commits acked offsets
afterwards: so the body returns only once the batch is in the database. An exception must never
escape the loop (the `finally` inside `take_events` would ack unapplied events): database
trouble is retried here, with back-off, until it succeeds.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust
import structlog
from faust.types import EventT

from streamsync.engine import BatchResult, SyncEngine
from streamsync.envelope import EnvelopeError, Event, decode
from streamsync.settings import StreamsyncSettings
from streamsync.topics import events_topic

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 30.0


class DatabaseThread:
    """All ORM work on one thread: Django's ORM is synchronous and its connections are per thread.

    One thread also means one connection and writes in the order batches arrive.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamsync-db")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the database thread without blocking the event loop (the consumer keeps heartbeating)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_with_fresh_connection, fn, *args, **kwargs)
        )


def _with_fresh_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    from django.db import close_old_connections

    # Drops connections that died (e.g. a database restart) so this batch opens a new one.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def apply_batch(engine: SyncEngine, db: DatabaseThread, source: str, batch: Sequence[EventT]) -> BatchResult:
    """Decode a batch and apply it, retrying until the database has it."""
    events: list[Event] = []
    for event in batch:
        try:
            events.append(decode(event.value))
        except EnvelopeError as error:
            # Dead-lettering comes with the failure-handling work; for now the reason is logged loudly.
            message = event.message
            log.error(
                "event rejected",
                source=source,
                code=error.code,
                reason=error.reason,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
    attempt = 0
    while True:
        try:
            return await db.run(engine.apply, events, source=source)
        except Exception as error:
            attempt += 1
            delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(attempt, 10))
            log.warning(
                "batch failed, retrying",
                source=source,
                attempt=attempt,
                retry_in=delay,
                error=repr(error),
                exc_info=True,
            )
            await asyncio.sleep(delay)


def register_sync_agent(app: faust.App, settings: StreamsyncSettings, source: str, db: DatabaseThread) -> None:
    """Add the agent that applies `source`'s events to Nautobot."""
    engine = SyncEngine(settings.source(source).registry(), username=settings.user)
    topic = app.topic(
        events_topic(source, settings.topic_prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    async def sync(stream: Any) -> None:  # faust.Stream; take_events is missing from StreamT
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_timeout):
            with structlog.contextvars.bound_contextvars(source=source):
                result = await apply_batch(engine, db, source, batch)
            for rejection in result.rejected:
                event = rejection.event
                log.error(
                    "event rejected",
                    source=source,
                    code=rejection.code,
                    reason=rejection.reason,
                    event_id=event.id,
                    key=event.canonical_key,
                )
            for failure in result.failed:
                log.error(
                    "object failed", source=source, key=failure.key, reason=failure.reason, retryable=failure.retryable
                )
            log.info("batch committed", source=source, **result.as_log())

    # concurrency=1: with more, faust-streaming can commit past an event still in flight.
    app.agent(topic, name=f"streamsync.sync.{source}", concurrency=1)(sync)
