"""Kafka for code on a database thread: each call blocks that thread until the event loop has done it.

Settling a batch publishes its state records and dead letters inside the batch's transaction
(streamsync/sync/settle.py); the producer lives on the event loop. The database thread hands the work
over and waits, with a deadline, while the loop stays free to heartbeat and fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import faust
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamsync.contract.records import OutRecord
from streamsync.kafka.connection import KafkaConnection

log = structlog.get_logger(__name__)
T = TypeVar("T")


class KafkaWire:
    """Publishes through the Faust app's producer and reads single offsets with a reader of its own."""

    def __init__(self, app: faust.App, kafka: KafkaConnection, timeout: float = 30.0) -> None:
        self.app = app
        self.kafka = kafka
        self.timeout = timeout
        self._reader: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()

    def publish(self, records: Sequence[OutRecord]) -> None:
        """Produce `records` in order and wait until Kafka acknowledged every one."""
        if records:
            self._call(self.send(records))

    def first_offset(self, topic: str, partition: int, offset: int) -> int:
        """The offset of the first record at or after `offset` (the log may have holes without records)."""
        return self._call(self._first_offset(TopicPartition(topic, partition), offset))

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self.app.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"Kafka did not answer within {self.timeout:g}s") from None

    async def send(self, records: Sequence[OutRecord]) -> None:
        """`publish`, for code on the event loop."""
        producer = self.app.producer
        pending = [await producer.send(r.topic, r.key, r.value, None, None, list(r.headers) or None) for r in records]
        await asyncio.gather(*pending)

    async def _first_offset(self, tp: TopicPartition, offset: int) -> int:
        async with self._reading:
            reader = await self._started_reader()
            reader.assign([tp])
            start = (await reader.beginning_offsets([tp]))[tp]
            if start > offset:
                log.error(
                    "records were deleted by the topic's retention before they were applied",
                    topic=tp.topic,
                    partition=tp.partition,
                    first_missing=offset,
                    log_start=start,
                )
            reader.seek(tp, max(offset, start))
            fetched = await reader.getmany(tp, timeout_ms=int(self.timeout * 1000), max_records=1)
            if not fetched.get(tp):
                raise TimeoutError(f"no record at or after offset {offset} of {tp.topic}[{tp.partition}]")
            return int(fetched[tp][0].offset)

    async def _started_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(enable_auto_commit=False, **self.kafka.client_kwargs())
            await reader.start()
            self._reader = reader
        return self._reader

    async def close(self) -> None:
        """Stop the reader, if one was started."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            with contextlib.suppress(Exception):
                await reader.stop()
