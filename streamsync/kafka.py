"""Thin helpers over aiokafka for what streamsync does outside Faust: topics, producing, reading offsets.

Each client is opened through a context manager that turns "cannot connect" into BrokerUnavailable
with the address tried, so every command reports an unreachable broker the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamsync.envelope import Event

CONNECT_TIMEOUT = 30.0


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached: raised at start-up with the address tried."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic streamsync needs, with how to create it when missing."""

    name: str
    partitions: int = 3
    replication: int = 1
    compacted: bool = False


@asynccontextmanager
async def _started(client: Any, bootstrap: str, stop: str) -> AsyncIterator[Any]:
    try:
        await asyncio.wait_for(client.start(), CONNECT_TIMEOUT)
    except (KafkaConnectionError, KafkaError, TimeoutError, OSError) as error:
        await getattr(client, stop)()
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {error!r}") from error
    try:
        yield client
    finally:
        await getattr(client, stop)()


def admin_client(bootstrap: str) -> Any:
    """A started AIOKafkaAdminClient, as an async context manager."""
    return _started(
        AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(CONNECT_TIMEOUT * 1000)),
        bootstrap,
        "close",
    )


def consumer(bootstrap: str, group: str | None = None) -> Any:
    """A started consumer that never commits by itself, as an async context manager."""
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    return _started(client, bootstrap, "stop")


def producer(bootstrap: str) -> Any:
    """A started idempotent producer waiting for all in-sync replicas, as an async context manager."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    return _started(client, bootstrap, "stop")


async def partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` that exist, in order."""
    names = sorted(set(topics) & set(await admin.list_topics()))
    if not names:
        return []
    return sorted(
        (
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(names)
            for p in t["partitions"]
        ),
        key=lambda tp: (tp.topic, tp.partition),
    )


async def ensure_topics(bootstrap: str, topics: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    async with admin_client(bootstrap) as admin:
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


async def produce(bootstrap: str, topic: str, events: Iterable[Event]) -> int:
    """Produce events keyed by canonical key, waiting for every acknowledgement; returns the count."""
    return await produce_raw(bootstrap, topic, ((e.canonical_key.encode(), e.to_bytes()) for e in events))


async def produce_raw(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce (key, value) pairs as they are, waiting for every acknowledgement; returns the count."""
    async with producer(bootstrap) as client:
        pending = [await client.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
        return len(pending)
