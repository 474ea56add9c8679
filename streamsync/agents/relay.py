"""The outbox relay: produces the outbox's rows to Kafka in order, and deletes them once acknowledged.

    claim (one transaction, advisory lock)  →  produce, acks=all, idempotent  →  delete the acked prefix, commit

One relay delivers a topic at a time: every `streamsync worker` runs one, and the one holding the
PostgreSQL advisory lock for the topic delivers while the others stand by. The lock and the claimed
rows live in one transaction on the relay's own database thread, held while Kafka acknowledges
(bounded by `send_timeout`). Delivery is at least once: a relay that dies after Kafka acknowledged
and before its commit sends those rows again; consumers de-duplicate by the envelope's `id` or,
as streamsync's engine does, apply upserts idempotently.

Per key the order holds: rows are produced in `id` order by an idempotent producer, and a failure
deletes only the rows before the first unacknowledged one, so nothing is produced after an event
of its key that will be produced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from streamsync.contract.topics import nautobot_events_topic
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import producer_kwargs
from streamsync.kafka.connection import KafkaConnection, as_connection, describe_error
from streamsync.settings import StreamsyncSettings
from streamsync.sync.backoff import INFRASTRUCTURE_CAP_SECONDS, backoff

log = structlog.get_logger(__name__)

# First key of the two-key advisory lock (the second is a hash of the topic): "ss".
LOCK_CLASS = 0x7373


@dataclass(frozen=True)
class RelayResult:
    """What one relay cycle did."""

    delivered: int = 0
    claimed: int = 0
    error: str = ""
    # Another relay holds the topic's lock.
    standby: bool = False


class OutboxRelay:
    """Delivers one topic's outbox rows to Kafka."""

    def __init__(
        self,
        bootstrap: KafkaConnection | str,
        topic: str,
        *,
        batch_size: int = 500,
        partitions: int = 3,
        replication: int = 1,
        send_timeout: float = 15.0,
    ) -> None:
        self.kafka = as_connection(bootstrap)
        self.bootstrap = self.kafka.bootstrap
        self.topic = topic
        self.batch_size = batch_size
        self.partitions = partitions
        self.replication = replication
        self.send_timeout = send_timeout
        # Its own thread, so its own database connection: the transaction stays open while Kafka acknowledges
        # without holding up the sync agents' database work.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamsync-outbox")
        self._producer: AIOKafkaProducer | None = None
        self._topic_ready = False
        self._closed = False

    async def run_once(self) -> RelayResult:
        """Claim up to `batch_size` rows, produce them, delete what Kafka acknowledged."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._db, self._claim)
        if rows is None:
            return RelayResult(standby=True)
        if not rows:
            return RelayResult()
        delivered, error = await self._send(rows)
        await loop.run_in_executor(self._db, self._settle, rows, delivered, error)
        return RelayResult(delivered=delivered, claimed=len(rows), error=error)

    async def run_forever(self, poll_interval: float) -> None:
        """Relay until cancelled: at once while rows wait, every `poll_interval` when idle, backing off on failures."""
        failures = 0
        try:
            while True:
                try:
                    result = await self.run_once()
                except Exception as error:  # the database is away: retry, never take the worker down
                    result = RelayResult(error=repr(error))
                if result.error:
                    failures += 1
                    delay = backoff(failures, 2 * poll_interval, INFRASTRUCTURE_CAP_SECONDS)
                    log.warning(
                        "outbox delivery failed, retrying",
                        topic=self.topic,
                        failures=failures,
                        retry_in=round(delay, 2),
                        error=result.error,
                    )
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    log.info("outbox delivery recovered", topic=self.topic, after_failures=failures)
                    failures = 0
                if result.delivered:
                    log.debug("outbox delivered", topic=self.topic, delivered=result.delivered)
                if result.claimed < self.batch_size:
                    await asyncio.sleep(poll_interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop the producer; roll back and close the database thread's connection."""
        if self._closed:
            return
        self._closed = True
        await self._drop_producer()
        self._db.submit(self._close_connection)
        self._db.shutdown(wait=False)

    # ------------------------------------------------------------------ Kafka (event loop)

    async def _send(self, rows: list[Any]) -> tuple[int, str]:
        """Produce `rows` in order within `send_timeout`; (how many from the first were acknowledged, why not all)."""
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.send_timeout):
                producer = await self._started_producer()
                for row in rows:
                    headers = row.kafka_headers()
                    futures.append(
                        await producer.send(row.topic, row.value.encode(), key=row.key.encode(), headers=headers)
                    )
                await asyncio.gather(*futures)
            return len(rows), ""
        except Exception as error:  # unreachable, timed out, refused: what was acknowledged before still counts
            acknowledged = [f.done() and not f.cancelled() and f.exception() is None for f in futures]
            delivered = acknowledged.index(False) if False in acknowledged else len(acknowledged)
            await self._drop_producer()
            if isinstance(error, TimeoutError):
                return delivered, f"no acknowledgement from {self.bootstrap} within {self.send_timeout:g}s"
            return delivered, describe_error(error)

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**producer_kwargs(self.kafka), request_timeout_ms=int(self.send_timeout * 1000))
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        if not self._topic_ready:
            await ensure_topics(self.kafka, [TopicSpec(self.topic, self.partitions, self.replication)])
            self._topic_ready = True
        return self._producer

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()

    # ------------------------------------------------------------------ database (the relay's thread)

    def _claim(self) -> list[Any] | None:
        """Open a transaction, take the topic's lock, read the oldest rows; None when another relay has the lock.

        The transaction stays open on this thread until `_settle` (or `_release`).
        """
        from django.db import close_old_connections, connection, transaction

        from streamsync.models.bookkeeping import OutboxEvent

        self._release()
        close_old_connections()
        transaction.set_autocommit(False)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", [LOCK_CLASS, self.topic])
                locked = cursor.fetchone()[0]
            rows = (
                list(OutboxEvent.objects.filter(topic=self.topic).order_by("id")[: self.batch_size]) if locked else []
            )
        except BaseException:
            self._release()
            raise
        if not rows:
            self._release()
        return rows if locked else None

    def _settle(self, rows: list[Any], delivered: int, error: str) -> None:
        """Delete the acknowledged rows, note the failure on the others, commit."""
        from django.db import transaction
        from django.db.models import F
        from django.utils import timezone

        from streamsync.models.bookkeeping import OutboxEvent

        try:
            if delivered:
                OutboxEvent.objects.filter(pk__in=[row.pk for row in rows[:delivered]]).delete()
            if error:
                OutboxEvent.objects.filter(pk__in=[row.pk for row in rows[delivered:]]).update(
                    attempts=F("attempts") + 1, last_attempt=timezone.now(), last_error=error[:2000]
                )
            transaction.commit()
        finally:
            self._release()

    @staticmethod
    def _release() -> None:
        """Roll back what is open on this thread (releasing the lock) and return to autocommit."""
        from django.db import connection, transaction

        if connection.connection is None or connection.get_autocommit():
            return
        try:
            transaction.rollback()
            transaction.set_autocommit(True)
        except Exception:  # the connection is gone (a database restart): start afresh on a new one
            connection.close()

    @classmethod
    def _close_connection(cls) -> None:
        from django.db import connection

        try:
            cls._release()
        finally:
            connection.close()


def register_relay(app: Any, settings: StreamsyncSettings) -> OutboxRelay:
    """Run the relay of Nautobot's change events (topic `<prefix>.nautobot.events`) as a task of the worker."""
    relay = OutboxRelay(
        settings.kafka(),
        nautobot_events_topic(settings.topic_prefix),
        batch_size=settings.outbox_batch_size,
        partitions=settings.topic_partitions,
        replication=settings.topic_replication,
    )

    async def outbox_relay() -> None:
        started = time.monotonic()
        log.info("outbox relay starting", topic=relay.topic, poll_interval=settings.outbox_poll_interval)
        try:
            await relay.run_forever(settings.outbox_poll_interval)
        finally:
            log.info("outbox relay stopped", topic=relay.topic, ran_s=round(time.monotonic() - started, 1))

    app.task(outbox_relay)
    return relay
