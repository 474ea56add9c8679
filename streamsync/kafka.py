"""Thin helpers over aiokafka for what streamsync does outside Faust: create topics, produce events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamsync.envelope import Event


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached: raised at start-up with the address tried."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic streamsync needs, with how to create it when missing."""

    name: str
    partitions: int = 3
    replication: int = 1
    compacted: bool = False


async def ensure_topics(bootstrap: str, topics: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (KafkaConnectionError, KafkaError, TimeoutError, OSError) as error:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {error!r}") from error
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        t.name,
                        t.partitions,
                        t.replication,
                        topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
                    )
                    for t in wanted
                ]
            )
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, events: Iterable[Event]) -> int:
    """Produce events keyed by canonical key, waiting for every acknowledgement; returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    try:
        await producer.start()
    except (KafkaConnectionError, KafkaError, OSError) as error:
        await producer.stop()
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {error!r}") from error
    try:
        pending = [await producer.send(topic, event.to_bytes(), key=event.canonical_key.encode()) for event in events]
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()
