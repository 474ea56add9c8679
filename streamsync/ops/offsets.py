"""`streamsync replay`: reprocess a source's events from an offset or a time, by moving the group's positions.

What `kafka-consumer-groups --reset-offsets` does, for one source's events topic and the workers'
consumer group, done to both places a position lives: the group's committed offsets in Kafka and
the positions in Nautobot's database that workers actually read from (streamsync/sync/positions.py).
The next worker to start resumes from the new offsets. Safe to repeat because the apply is
idempotent (an event whose change is already in Nautobot changes nothing), and refused while the
group has active members, whose next commit would overwrite the reset (Kafka itself refuses
offset commits from outside a live group's generation, too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from streamsync.kafka.admin import partitions
from streamsync.kafka.clients import admin_client, consumer
from streamsync.kafka.connection import KafkaConnection
from streamsync.ops.columns import format_table


class ReplayRefused(RuntimeError):
    """The reset cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class PartitionReset:
    """One partition's move: from where the workers would read to the new offset, and what that reprocesses."""

    partition: int
    current: int | None  # the stored position, else the committed offset; None: neither exists
    new: int
    end: int

    @property
    def reprocess(self) -> int:
        """Events the group will read again (or for the first time) from the new offset."""
        return self.end - self.new


@dataclass(frozen=True)
class Member:
    """A live member of a consumer group."""

    client_id: str
    host: str


async def active_members(kafka: KafkaConnection | str, group: str) -> list[Member]:
    """The consumer group's live members (none when it is empty or unknown)."""
    async with admin_client(kafka) as admin:
        responses = await admin.describe_consumer_groups([group])
    members: list[Member] = []
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["group"] == group:
                members += [Member(m["client_id"], m["client_host"]) for m in described["members"]]
    return members


async def plan_reset(
    kafka: KafkaConnection | str,
    group: str,
    topic: str,
    *,
    offset: int | None = None,
    at: datetime | None = None,
    only: Collection[int] = (),
) -> list[PartitionReset]:
    """Where each partition of `topic` would move: to `offset`, to the first event at or after `at`, or to the start.

    An offset beyond a partition's range is clamped to it, as kafka-consumer-groups does; a time
    after a partition's last event moves it to its end (nothing to reprocess there).
    """
    async with admin_client(kafka) as admin:
        tps = await partitions(admin, [topic])
        committed = await admin.list_consumer_group_offsets(group, partitions=tps) if tps else {}
    if not tps:
        raise ReplayRefused(f"topic {topic} does not exist")
    unknown = set(only) - {tp.partition for tp in tps}
    if unknown:
        raise ReplayRefused(f"{topic} has no partition {sorted(unknown)}; it has 0-{len(tps) - 1}")
    chosen = [tp for tp in tps if not only or tp.partition in only]
    async with consumer(kafka) as reader:
        starts = await reader.beginning_offsets(chosen)
        ends = await reader.end_offsets(chosen)
        found = await reader.offsets_for_times({tp: int(at.timestamp() * 1000) for tp in chosen}) if at else {}
    resets = []
    for tp in chosen:
        if offset is not None:
            new = min(max(offset, starts[tp]), ends[tp])
        elif at is not None:
            hit = found.get(tp)
            new = hit.offset if hit is not None else ends[tp]
        else:
            new = starts[tp]
        meta = committed.get(tp)
        current = meta.offset if meta is not None and meta.offset >= 0 else None
        resets.append(PartitionReset(tp.partition, current, new, ends[tp]))
    return resets


async def reset(kafka: KafkaConnection | str, group: str, topic: str, resets: Collection[PartitionReset]) -> None:
    """Commit the new offsets for `group`; refused while the group has live members."""
    members = await active_members(kafka, group)
    if members:
        raise ReplayRefused(refusal(group, members))
    async with consumer(kafka, group) as committer:
        positions = {TopicPartition(topic, r.partition): r.new for r in resets}
        committer.assign(list(positions))
        try:
            await committer.commit(positions)
        except CommitFailedError as error:  # a worker joined since the check: Kafka refuses outside commits
            raise ReplayRefused(f"Kafka refused the reset: consumer group {group} has active members now") from error


def with_positions(group: str, source: str, topic: str, resets: Collection[PartitionReset]) -> list[PartitionReset]:
    """`resets` whose current offsets are the stored positions, where the database has one."""
    from streamsync.sync.positions import stored, sync_agent

    agent = sync_agent(source)
    found = stored(group, [agent], [(topic, r.partition) for r in resets])
    return [dataclasses.replace(r, current=found.get((agent, (topic, r.partition)), r.current)) for r in resets]


def move_positions(group: str, source: str, topic: str, resets: Collection[PartitionReset]) -> None:
    """Store the new offsets as the positions the source's workers read from."""
    from streamsync.sync.positions import move, sync_agent

    move(group, sync_agent(source), topic, {r.partition: r.new for r in resets})


def refusal(group: str, members: Collection[Member]) -> str:
    """Why a reset is refused while workers run."""
    who = ", ".join(sorted({f"{m.client_id}@{m.host}" for m in members}))
    return (
        f"consumer group {group} has {len(members)} active member(s) ({who}): stop its workers first, "
        "or their next commit would overwrite the reset"
    )


def format_resets(topic: str, resets: Collection[PartitionReset]) -> str:
    """A table: per partition the committed offset, the new one, the log end and the events to reprocess."""
    header = ("TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "LOG-END-OFFSET", "REPROCESS")
    body = [
        (
            topic,
            str(r.partition),
            "-" if r.current is None else str(r.current),
            str(r.new),
            str(r.end),
            str(r.reprocess),
        )
        for r in resets
    ]
    return format_table(header, body, numeric_from=1)
