"""Publishing a source's events from any Python program, without Nautobot.

`Publisher` builds each envelope, checks it exactly as the worker will decode it, keys it by its
canonical key and produces it with the settings every streamsync producer uses (PRODUCER_SETTINGS):
a mistake is an exception here, at the producer, rather than a dead letter later.
`BlockingPublisher` is the same for code that is not async.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from streamsync_client.envelope import EnvelopeError, Event, KeyValue, Op, RejectCode, decode, describe
from streamsync_client.partitioning import PRODUCER_SETTINGS
from streamsync_client.topics import DEFAULT_PREFIX, events_topic

T = TypeVar("T")

# Acknowledged sends are forgotten once this many are outstanding, so a producer that rarely
# flushes does not keep every future; failed and unfinished ones are kept for flush() to report.
_PRUNE_AT = 1000


class PublishError(Exception):
    """Kafka did not acknowledge some of the events sent since the last flush."""

    def __init__(self, failed: list[BaseException], sent: int) -> None:
        super().__init__(f"{len(failed)} of {sent} event(s) not acknowledged; first error: {failed[0]!r}")
        self.errors = failed


def build_event(
    source: str,
    model: str,
    op: Op,
    key: Mapping[str, KeyValue],
    attrs: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
    ts: datetime | None = None,
) -> Event:
    """An envelope, checked as the worker decodes it; EnvelopeError with the worker's code otherwise."""
    fields: dict[str, Any] = {"source": source, "model": model, "op": op, "key": dict(key), "attrs": dict(attrs or {})}
    if event_id is not None:
        fields["id"] = event_id
    if ts is not None:
        fields["ts"] = ts
    try:
        event = Event.model_validate(fields)
    except ValidationError as error:
        raise EnvelopeError(RejectCode.INVALID_ENVELOPE, f"invalid envelope: {describe(error)}") from None
    return check(event)


def check(event: Event) -> Event:
    """`event` if the worker will decode its bytes; EnvelopeError otherwise (a NUL, too deep, ...)."""
    decode(event.to_bytes())
    return event


class Publisher:
    """Produces `source`'s events to `<prefix>.<source>.events`, as streamsync's own producers do.

    Use it as `async with Publisher("cmdb") as publisher:`; leaving the block flushes. Sends are
    asynchronous: `flush()` waits until Kafka has acknowledged everything sent before it. Extra
    keyword arguments go to aiokafka's producer (TLS and SASL settings, `linger_ms`, ...).
    """

    def __init__(
        self,
        source: str,
        bootstrap: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        **producer_options: Any,
    ) -> None:
        self.source = source
        self.topic = events_topic(source, topic_prefix)
        self._options = {"bootstrap_servers": bootstrap, **producer_options, **PRODUCER_SETTINGS}
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        self._sent = 0

    async def start(self) -> None:
        """Connect to Kafka (raises aiokafka's KafkaConnectionError if it cannot)."""
        if self._producer is None:
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        """Flush, then disconnect."""
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def upsert(
        self,
        model: str,
        key: Mapping[str, KeyValue],
        attrs: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
        ts: datetime | None = None,
    ) -> Event:
        """Create the object `key` names, or update the attributes `attrs` names; returns the event sent."""
        return await self.send(build_event(self.source, model, Op.UPSERT, key, attrs, event_id=event_id, ts=ts))

    async def delete(
        self, model: str, key: Mapping[str, KeyValue], *, event_id: str | None = None, ts: datetime | None = None
    ) -> Event:
        """Delete the object `key` names; returns the event sent."""
        return await self.send(build_event(self.source, model, Op.DELETE, key, event_id=event_id, ts=ts))

    async def send(self, event: Event) -> Event:
        """Produce an event built elsewhere, after the same checks; it must be this publisher's source's."""
        if event.source != self.source:
            raise ValueError(f"event source {event.source!r} is not this publisher's {self.source!r}")
        if self._producer is None:
            raise RuntimeError("the publisher is not started: use `async with Publisher(...)` or await start()")
        raw = check(event).to_bytes()
        future = await self._producer.send(self.topic, raw, key=event.canonical_key.encode())
        self._pending.append(future)
        self._sent += 1
        if len(self._pending) >= _PRUNE_AT:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        return event

    async def flush(self) -> int:
        """Wait until Kafka acknowledged every event sent so far; returns how many were sent since the last flush.

        Raises PublishError naming what failed; those events are not retried by it.
        """
        pending, self._pending = self._pending, []
        sent, self._sent = self._sent, 0
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise PublishError(failed, sent)
        return sent


class BlockingPublisher:
    """`Publisher` for code that is not async: the same methods, each returning when it is done.

    Its producer runs on an event loop in a thread of its own, so it works from any thread, an
    async program's included. Use it as `with BlockingPublisher("cmdb") as publisher:`.
    """

    def __init__(
        self,
        source: str,
        bootstrap: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        **producer_options: Any,
    ) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._publisher = Publisher(source, bootstrap, topic_prefix=topic_prefix, **producer_options)
        self.source, self.topic = self._publisher.source, self._publisher.topic

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the publisher is not started: use `with BlockingPublisher(...)` or start()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        """Start the loop's thread and connect to Kafka."""
        if self._thread is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="streamsync-publisher", daemon=True)
            self._thread.start()
        self._run(self._publisher.start())

    def close(self) -> None:
        """Flush, disconnect and end the loop's thread."""
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        try:
            self._run(self._publisher.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join()
            self._thread, self._loop = None, None
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def upsert(
        self,
        model: str,
        key: Mapping[str, KeyValue],
        attrs: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
        ts: datetime | None = None,
    ) -> Event:
        """Publisher.upsert."""
        return self._run(self._publisher.upsert(model, key, attrs, event_id=event_id, ts=ts))

    def delete(
        self, model: str, key: Mapping[str, KeyValue], *, event_id: str | None = None, ts: datetime | None = None
    ) -> Event:
        """Publisher.delete."""
        return self._run(self._publisher.delete(model, key, event_id=event_id, ts=ts))

    def send(self, event: Event) -> Event:
        """Publisher.send."""
        return self._run(self._publisher.send(event))

    def flush(self) -> int:
        """Publisher.flush."""
        return self._run(self._publisher.flush())
