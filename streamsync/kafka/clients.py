"""The clients streamsync opens outside Faust: admin, consumer, producer, and producing records.

Each client is opened through a context manager that turns "cannot connect" into BrokerUnavailable
with the address tried and, when the broker refused the credentials or the TLS handshake, why:
every command reports a failed connection the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamsync.contract.envelope import Event
from streamsync.contract.partitioning import PRODUCER_SETTINGS
from streamsync.contract.records import OutRecord
from streamsync.kafka.connection import (
    CONNECT_TIMEOUT,
    TLS_PROTOCOLS,
    BrokerUnavailable,
    KafkaConnection,
    as_connection,
    describe_error,
)


@asynccontextmanager
async def _started(client: Any, connection: KafkaConnection, stop: str) -> AsyncIterator[Any]:
    try:
        await asyncio.wait_for(client.start(), CONNECT_TIMEOUT)
    except (KafkaConnectionError, KafkaError, TimeoutError, OSError) as error:
        await getattr(client, stop)()
        raise BrokerUnavailable(await unavailable_message(connection, error)) from None
    try:
        yield client
    finally:
        await getattr(client, stop)()


async def unavailable_message(connection: KafkaConnection, error: BaseException) -> str:
    """One line saying why the cluster could not be reached, with the broker's reason when there is one.

    aiokafka only logs why each bootstrap server failed and raises "Unable to bootstrap"; one more
    connection attempt to the first server brings the reason (refused credentials, TLS) to the message.
    """
    reason = await probe(connection) or describe_error(error)
    if connection.security_protocol in TLS_PROTOCOLS and not connection.ssl_certfile and "closed" in reason:
        # With TLS 1.3 a broker that requires client certificates says so only by closing the connection.
        reason += " (if the listener requires client certificates, set ssl_certfile and ssl_keyfile)"
    security = connection.describe()
    how = security["protocol"]
    if "user" in security:
        how += f" {security['mechanism']} as {security['user']!r}"
    return connection.redact(f"cannot reach Kafka at {connection.bootstrap} ({how}): {reason}")


async def probe(connection: KafkaConnection, timeout: float = 10.0) -> str | None:
    """Why a connection to the first bootstrap server fails (None when it succeeds)."""
    from aiokafka.conn import create_conn

    host, _, port = connection.servers[0].rpartition(":")
    auth = connection.aiokafka_auth()
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **auth), timeout
        )
    except (KafkaError, OSError, TimeoutError) as error:
        return describe_error(error)
    conn.close()
    return None


def admin_client(kafka: KafkaConnection | str) -> Any:
    """A started AIOKafkaAdminClient, as an async context manager."""
    connection = as_connection(kafka)
    return _started(
        AIOKafkaAdminClient(request_timeout_ms=int(CONNECT_TIMEOUT * 1000), **connection.client_kwargs()),
        connection,
        "close",
    )


def consumer(kafka: KafkaConnection | str, group: str | None = None) -> Any:
    """A started consumer that never commits by itself, as an async context manager."""
    connection = as_connection(kafka)
    client = AIOKafkaConsumer(
        group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", **connection.client_kwargs()
    )
    return _started(client, connection, "stop")


def producer_kwargs(kafka: KafkaConnection | str) -> dict[str, Any]:
    """The settings of every producer outside Faust.

    Idempotent and waiting for all in-sync replicas; keys hashed as the contract names it
    (streamsync.contract.partitioning), so a key lands where every other producer of the topic sends it.
    The same PRODUCER_SETTINGS as the producer client's Publisher.
    """
    return {"linger_ms": 5, **PRODUCER_SETTINGS, **as_connection(kafka).client_kwargs()}


def producer(kafka: KafkaConnection | str) -> Any:
    """A started idempotent producer waiting for all in-sync replicas, as an async context manager."""
    connection = as_connection(kafka)
    return _started(AIOKafkaProducer(**producer_kwargs(connection)), connection, "stop")


async def produce(kafka: KafkaConnection | str, topic: str, events: Iterable[Event]) -> int:
    """Produce events keyed by canonical key, waiting for every acknowledgement; returns the count."""
    return await produce_raw(kafka, topic, ((e.canonical_key.encode(), e.to_bytes()) for e in events))


async def produce_raw(
    kafka: KafkaConnection | str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Produce (key, value) pairs as they are, waiting for every acknowledgement; returns the count."""
    async with producer(kafka) as client:
        pending = [await client.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
        return len(pending)


async def produce_records(kafka: KafkaConnection | str, records: Iterable[OutRecord]) -> int:
    """Produce records (topic, key, value, headers) as they are, in order, waiting for every acknowledgement."""
    async with producer(kafka) as client:
        pending = [await client.send(r.topic, r.value, key=r.key, headers=list(r.headers) or None) for r in records]
        await asyncio.gather(*pending)
        return len(pending)
