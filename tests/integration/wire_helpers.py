"""Records as they are on the wire, and where a group stands: raw producing, offsets, positions, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from streamsync.contract.envelope import canonical_key
from tests.integration.conftest import Stream

SOURCE = "ipam"
AGENT = "streamsync.sync.ipam"
Record = tuple[bytes | None, bytes | None]


def produce(
    bootstrap: str, topic: str, records: Sequence[Record], headers: Sequence[tuple[str, bytes]] = ()
) -> list[int]:
    """Produce `records` (key, value) as they are, all to partition 0, in order; their offsets."""

    async def run() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, acks="all")
        await producer.start()
        try:
            return [
                (await producer.send_and_wait(topic, value, key=key, partition=0, headers=list(headers) or None)).offset
                for key, value in records
            ]
        finally:
            await producer.stop()

    return asyncio.run(run())


def create_topic(bootstrap: str, topic: str, config: dict[str, str], partitions: int = 3) -> None:
    """Create `topic` with `config` before any worker creates it with the defaults."""
    from aiokafka.admin import NewTopic

    from streamsync.kafka.clients import admin_client

    async def run() -> None:
        async with admin_client(bootstrap) as admin:
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])

    asyncio.run(run())


def raw(event: dict[str, Any]) -> Record:
    """An event as a producer following the contract sends it: keyed by its canonical key."""
    return canonical_key(event["model"], event["key"]).encode(), json.dumps(event).encode()


def envelope_text(event: dict[str, Any], **replace: str) -> bytes:
    """The event's JSON with literal substrings replaced: for escapes json.dumps would never write."""
    text = json.dumps(event)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode()


def letters(stream: Stream, system: str = SOURCE) -> dict[int, dict[str, Any]]:
    """`streamsync dlq list --json` of `system`, by the original record's offset."""
    result = stream.cli("dlq", "list", system, "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    return {letter["original_offset"]: letter for letter in map(json.loads, result.stdout.splitlines())}


def committed_and_end(stream: Stream, topic: str) -> tuple[int | None, int]:
    """The group's committed offset and the log end of `topic`'s partition 0."""
    from aiokafka import TopicPartition

    from streamsync.kafka.clients import admin_client, consumer

    async def run() -> tuple[int | None, int]:
        tp = TopicPartition(topic, 0)
        async with admin_client(stream.bootstrap) as admin:
            offsets = await admin.list_consumer_group_offsets(stream.group, partitions=[tp])
        async with consumer(stream.bootstrap) as reader:
            end = (await reader.end_offsets([tp]))[tp]
        meta = offsets.get(tp)
        return (meta.offset if meta is not None and meta.offset >= 0 else None), end

    return asyncio.run(run())


def stored_position(stream: Stream, agent: str, topic: str) -> int | None:
    """The position the database vouches for on `topic`'s partition 0."""
    from streamsync.models.bookkeeping import Position

    return (
        Position.objects.filter(group=stream.group, agent=agent, topic=topic, partition=0)
        .values_list("next_offset", flat=True)
        .first()
    )


def settled_to_end(stream: Stream, agent: str, topic: str) -> Callable[[], bool]:
    """True once both Kafka's committed offset and the stored position are at the log's end."""

    def check() -> bool:
        committed, end = committed_and_end(stream, topic)
        return committed == end and stored_position(stream, agent, topic) == end

    return check


def vlan_state(group: str | None) -> dict[int, tuple[str, str, str]]:
    """Every VLAN of `group` (None: VLANs in no group): vid -> (name, status, description)."""
    from nautobot.ipam.models import VLAN

    rows = VLAN.objects.filter(vlan_group__name=group) if group is not None else VLAN.objects.filter(vlan_group=None)
    return {v.vid: (v.name, v.status.name, v.description) for v in rows.select_related("status")}


def commit_offset(stream: Stream, topic: str, partition: int, offset: int) -> None:
    """Commit `offset` for the stream's group by hand, as `kafka-consumer-groups --reset-offsets` would."""
    from aiokafka import TopicPartition

    from streamsync.kafka.clients import consumer

    async def run() -> None:
        async with consumer(stream.bootstrap, stream.group) as committer:
            tp = TopicPartition(topic, partition)
            committer.assign([tp])
            await committer.commit({tp: offset})

    asyncio.run(run())


def vlan_records(group: str, vids: Sequence[int], description: str) -> list[Record]:
    """One upsert per VLAN of `group`, each keyed as the contract says."""
    from tests.integration.state_helpers import vlan_event

    return [raw(vlan_event("upsert", vid, group, SOURCE, name=f"v{vid}", description=description)) for vid in vids]


def produce_transaction(bootstrap: str, topic: str, records: Sequence[Record], transactional_id: str) -> list[int]:
    """Produce `records` to partition 0 in one Kafka transaction (a commit marker follows them); their offsets."""

    async def run() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
        await producer.start()
        try:
            async with producer.transaction():
                sent = [await producer.send(topic, value, key=key, partition=0) for key, value in records]
            return [(await future).offset for future in sent]
        finally:
            await producer.stop()

    return asyncio.run(run())
