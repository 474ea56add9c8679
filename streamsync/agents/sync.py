"""The sync agent: the hot path from a Kafka batch to a Nautobot commit.

    take_events(n, within=t) → decode → engine.apply + state merge (one DB thread) → state topic
      → dead letters → ack → commit

faust acks the whole buffered batch when the loop body returns, and commits acked offsets
afterwards: so the body returns only once every event of the batch is either in the database or
on the dead-letter topic, and the touched keys' full states are on the state topic. An exception
must never escape the loop (the `finally` inside `take_events` would ack unapplied events):
database and broker trouble is retried here, with back-off, until it succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import faust
import structlog
from faust.types import EventT, Message

from streamsync import metrics
from streamsync.deadletter import APPLY_FAILED, DEPENDENCY_MISSING, DeadLetter
from streamsync.engine import BatchResult, SyncEngine
from streamsync.envelope import EnvelopeError, Event, decode
from streamsync.retry import Origin, apply_or_park, forget, retry_due
from streamsync.settings import StreamsyncSettings
from streamsync.state import StateRecord
from streamsync.topics import dlq_topic, events_topic, state_topic

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


async def until_done(what: str, attempt: Callable[[], Awaitable[T]], stopping: Callable[[], bool], **context: Any) -> T:
    """Run `attempt` until it succeeds, backing off up to MAX_BACKOFF_SECONDS; log each failure.

    A worker told to stop while this keeps failing (SIGTERM during a database outage) cannot finish
    its batch, and must not let faust acknowledge it: it leaves at once, uncommitted, and the batch
    is delivered again to whichever worker has the partition next.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as error:
            failures += 1
            delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 10))
            log.warning(f"{what} failed, retrying", attempt=failures, retry_in=delay, error=repr(error), **context)
            deadline = asyncio.get_running_loop().time() + delay
            while asyncio.get_running_loop().time() < deadline:
                if stopping():
                    _leave_uncommitted(what, error, **context)
                await asyncio.sleep(min(0.2, delay))


def _leave_uncommitted(what: str, error: BaseException, **context: Any) -> NoReturn:
    log.error(
        f"stopping while {what} cannot succeed: exiting without committing; the batch will be delivered again",
        error=repr(error),
        **context,
    )
    logging.shutdown()
    # Not sys.exit: faust's shutdown would acknowledge and commit the batch that was not applied.
    os._exit(0)


class SourceSync:
    """Applies one source's batches and dead-letters what cannot be applied."""

    def __init__(self, app: faust.App, settings: StreamsyncSettings, source: str, db: DatabaseThread) -> None:
        self.app = app
        self.source = source
        self.db = db
        self.engine = SyncEngine(settings.source(source).registry(), username=settings.user)
        self.dlq = dlq_topic(source, settings.topic_prefix)
        self.state = state_topic(source, settings.topic_prefix)
        self.policy = settings.retry
        self._retrying = asyncio.Lock()

    async def handle(self, batch: Sequence[EventT]) -> BatchResult:
        """One batch, start to end: when this returns, every event is applied or dead-lettered."""
        events: list[Event] = []
        origins: dict[int, Origin] = {}  # id(event) -> where it came from
        dead: list[tuple[Origin, DeadLetter]] = []
        for record in batch:
            origin = _origin(record.message)
            try:
                event = decode(record.value)
            except EnvelopeError as error:
                dead.append((origin, self._letter(origin, error.code, error.reason)))
                continue
            events.append(event)
            origins[id(event)] = origin

        result, parked, state = await until_done(
            "batch",
            lambda: self.db.run(apply_or_park, self.engine, self.source, events, origins, self.policy),
            self._stopping,
            source=self.source,
        )
        if state:
            # After the commit, before the ack: a crash in between re-applies the batch and re-sends
            # the same full states, which is harmless.
            await until_done("state", lambda: self._publish_state(state), self._stopping, source=self.source)

        for rejection in result.rejected:
            origin = origins[id(rejection.event)]
            dead.append((origin, self._letter(origin, rejection.code, rejection.reason)))
        waiting = set(parked)
        for failure in result.failed:
            code = DEPENDENCY_MISSING if failure.retryable else APPLY_FAILED
            for event in failure.events:
                if id(event) in waiting:
                    log.warning("event parked for retry", source=self.source, key=failure.key, reason=failure.reason)
                else:
                    dead.append((origins[id(event)], self._letter(origins[id(event)], code, failure.reason)))
        if dead:
            await until_done("dead-lettering", lambda: self._dead_letter(dead), self._stopping, source=self.source)
        return result

    async def retry(self) -> None:
        """Re-apply keys whose retry is due; dead-letter those out of attempts."""
        if self._retrying.locked():
            return
        async with self._retrying:
            result, doomed = await until_done(
                "retry",
                lambda: self.db.run(retry_due, self.engine, self.source, self.policy),
                self._stopping,
                source=self.source,
            )
            if doomed:
                dead = [(d.origin, self._letter(d.origin, d.code, d.reason, d.attempts)) for d in doomed]
                await until_done("dead-lettering", lambda: self._dead_letter(dead), self._stopping, source=self.source)
                ids = [d.row_id for d in doomed if d.row_id is not None]
                await until_done(
                    "forgetting dead-lettered rows",
                    lambda: self.db.run(forget, ids),
                    self._stopping,
                    source=self.source,
                )
            if result is not None:
                log.info("retry batch", source=self.source, **result.as_log())
                metrics.observe_batch(self.source, result.received, result)  # outcomes of retried events count too

    async def _publish_state(self, records: Sequence[StateRecord]) -> None:
        """Produce the touched keys' full states (tombstones for deletes); wait for every acknowledgement."""
        producer = self.app.producer
        pending = [await producer.send(self.state, *record.kafka(), None, None, None) for record in records]
        await asyncio.gather(*pending)

    def _stopping(self) -> bool:
        return bool(self.app.should_stop)

    def _letter(self, origin: Origin, code: str, reason: str, attempts: int = 1) -> DeadLetter:
        return DeadLetter(
            code=code,
            reason=reason,
            source=self.source,
            attempts=attempts,
            original_topic=origin.topic,
            original_partition=origin.partition,
            original_offset=origin.offset,
        )

    async def _dead_letter(self, dead: list[tuple[Origin, DeadLetter]]) -> None:
        await dead_letter(self.app, self.dlq, dead, source=self.source)


async def dead_letter(app: faust.App, topic: str, dead: list[tuple[Origin, DeadLetter]], **system: str) -> None:
    """Produce the original bytes and key with the reason in headers; wait for every acknowledgement.

    `system` names whose letters these are in the log, e.g. source="ipam" (or target="inventory").
    """
    producer = app.producer
    pending = [
        await producer.send(topic, origin.message_key, origin.value, None, None, letter.headers())
        for origin, letter in dead
    ]
    await asyncio.gather(*pending)
    metrics.observe_dead_letters(next(iter(system.values())), (letter.code for _, letter in dead))
    for origin, letter in dead:
        log.error(
            "event dead-lettered",
            **system,
            code=letter.code,
            reason=letter.reason,
            attempts=letter.attempts,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
        )


def _origin(message: Message) -> Origin:
    return Origin(message.key, message.value or b"", message.topic, message.partition, message.offset)


def events_channel(app: faust.App, settings: StreamsyncSettings, system: str) -> Any:
    """`<prefix>.<system>.events` as an agent reads it: raw key and value bytes, decoded by the agent itself."""
    return app.topic(
        events_topic(system, settings.topic_prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )


def register_sync_agent(app: faust.App, settings: StreamsyncSettings, source: str, db: DatabaseThread) -> None:
    """Add the agent that applies `source`'s events to Nautobot, and the timer that retries its parked ones."""
    sync_source = SourceSync(app, settings, source, db)
    topic = events_channel(app, settings, source)

    async def sync(stream: Any) -> None:  # faust.Stream; take_events is missing from StreamT
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_timeout):
            result = await sync_source.handle(batch)
            log.info("batch committed", source=source, **result.as_log())
            metrics.observe_batch(source, len(batch), result)

    # concurrency=1: with more, faust-streaming can commit past an event still in flight.
    app.agent(topic, name=f"streamsync.sync.{source}", concurrency=1)(sync)
    app.timer(settings.retry_interval, name=f"streamsync.retry.{source}")(sync_source.retry)
