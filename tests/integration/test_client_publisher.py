"""The producer client's Publisher against the real broker: a real worker applies exactly what it sent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync_client import Publisher, partition_for
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration


async def _records(stream: Stream, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stream.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[Any] = []
        while len(records) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            if not batches:
                break
            records += [record for batch in batches.values() for record in batch]
        return records
    finally:
        await consumer.stop()


def test_a_worker_applies_what_the_publisher_sent_in_order_per_key(stream: Stream, start_worker: Any) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    group = f"g-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=group)
    # Three partitions before anything is sent: a broker that creates topics on first use gives one.
    topic = f"{stream.prefix}.ipam.events"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, 3)]))
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    expected: dict[int, tuple[str, str, str]] = {}

    async def publish() -> int:
        async with Publisher("ipam", stream.bootstrap, topic_prefix=stream.prefix) as publisher:
            for vid in range(1, 31):
                key: dict[str, int | str] = {"vid": vid, "vlan_group__name": group}
                await publisher.upsert("vlan", key, {"name": f"v{vid}", "description": "first"})
                expected[vid] = (f"v{vid}", "Active", "first")
                if vid % 3 == 0:
                    await publisher.upsert("vlan", key, {"description": "second", "status__name": "Reserved"})
                    expected[vid] = (f"v{vid}", "Reserved", "second")
                if vid % 5 == 0:
                    await publisher.delete("vlan", key)
                    del expected[vid]
                if vid % 10 == 0:  # deleted, then created again with only what this upsert names
                    await publisher.upsert("vlan", key, {"name": f"again{vid}"})
                    expected[vid] = (f"again{vid}", "Active", "")
            return await publisher.flush()

    sent = asyncio.run(publish())

    def state() -> dict[int, tuple[str, str, str]]:
        vlans = VLAN.objects.filter(vlan_group__name=group).select_related("status")
        return {v.vid: (v.name, v.status.name, v.description) for v in vlans}

    wait_for(lambda: state() == expected, 120, f"{len(expected)} VLANs as published", worker)

    # Every record is keyed by its canonical key, on the partition the contract names for that key.
    records = asyncio.run(_records(stream, topic, sent))
    assert len(records) == sent
    assert all(r.partition == partition_for(r.key, 3) for r in records)
    assert {r.key.decode() for r in records} == {
        f'vlan:{{"vid":{vid},"vlan_group__name":"{group}"}}' for vid in range(1, 31)
    }
