"""A worker's real activity for the health page, its API and its browser test: two VLANs and one dead letter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from streamsync.contract.envelope import Event, Op
from streamsync.contract.partitioning import partition_for
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import produce_raw
from tests.integration.conftest import Stream, WorkerProcess, wait_for

PARTITIONS = 3
POISON = (b"poison", b"{oops")


@dataclass
class Activity:
    """What the worker did: the topic, the VLAN group, the records' keys, and the worker itself."""

    topic: str
    group: str
    keys: list[bytes]
    worker: WorkerProcess

    nudges: int = 0

    def nudge(self, bootstrap: str) -> None:
        """One more (unchanged) upsert, so that the worker records a batch again.

        Another test session starting clears Nautobot's Redis, and the recent batches with it.
        """
        key, value = vlan_event(self.group, 1)
        asyncio.run(produce_raw(bootstrap, self.topic, [(key, value)]))
        self.keys.append(key)
        self.nudges += 1

    def partition(self, key: bytes) -> int:
        """Where the producer put `key` (murmur2, as every client of the contract)."""
        return partition_for(key, PARTITIONS)

    def ends(self) -> dict[int, int]:
        """Each partition's log-end offset after the records produced so far."""
        return {p: sum(1 for k in self.keys if self.partition(k) == p) for p in range(PARTITIONS)}


def vlan_event(group: str, vid: int) -> tuple[bytes, bytes]:
    """An upsert of VLAN `vid` in VLAN group `group`, keyed canonically."""
    event = Event(
        source="ipam",
        model="vlan",
        op=Op.UPSERT,
        key={"vid": vid, "vlan_group__name": group},
        attrs={"name": f"v{vid}"},
    )
    return event.canonical_key.encode(), event.to_bytes()


def two_vlans_and_a_dead_letter(stream: Stream, start_worker: Callable[..., WorkerProcess]) -> Activity:
    """Start an ipam worker, produce two VLAN upserts and one record that is not JSON; wait for both VLANs."""
    from nautobot.ipam.models import VLAN, VLANGroup

    group = f"hp-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    topic = f"{stream.prefix}.ipam.events"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, PARTITIONS)]))
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    records = [vlan_event(group, 1), vlan_event(group, 2), POISON]
    asyncio.run(produce_raw(stream.bootstrap, topic, records))
    wait_for(lambda: VLAN.objects.filter(vlan_group__name=group).count() == 2, 120, "two VLANs", worker)
    return Activity(topic, group, [key for key, _ in records], worker)
