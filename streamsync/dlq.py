"""Reading and re-driving dead letters (`streamsync dlq list|replay`).

`replay` remembers how far it got in a consumer group of its own (`<group>-dlq-replay`), so a
letter is re-driven once; a replayed event that fails again comes back as a new dead letter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from streamsync.deadletter import DeadLetter
from streamsync.kafka import KafkaConnection, admin_client, consumer, partitions, produce_raw


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as it sits on the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    letter: DeadLetter | None  # None: headers missing or unreadable
    replayed: bool


def replay_group(group: str) -> str:
    """The consumer group that remembers how far `dlq replay` got for `group`."""
    return f"{group}-dlq-replay"


async def read_letters(bootstrap: KafkaConnection | str, topic: str, group: str) -> list[StoredLetter]:
    """Every dead letter on `topic` up to its current end, marked replayed if `dlq replay` passed it."""
    async with admin_client(bootstrap) as admin:
        tps = await partitions(admin, [topic])
    if not tps:
        return []
    letters: list[StoredLetter] = []
    async with consumer(bootstrap, replay_group(group)) as reader:
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        done = {tp: (await reader.committed(tp)) or 0 for tp in tps}
        await reader.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > await reader.position(tp)}
        while remaining:
            for tp, records in (await reader.getmany(*remaining, timeout_ms=1000)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        letters.append(_stored(tp, record, done[tp]))
            remaining = {tp for tp in remaining if await reader.position(tp) < ends[tp]}
    return sorted(letters, key=lambda s: (s.partition, s.offset))


def _stored(tp: TopicPartition, record: ConsumerRecord[bytes, bytes], replayed_below: int) -> StoredLetter:
    try:
        letter: DeadLetter | None = DeadLetter.from_headers(list(record.headers or []))
    except ValidationError:
        letter = None
    return StoredLetter(tp.partition, record.offset, record.key, record.value, letter, record.offset < replayed_below)


def destination(stored: StoredLetter, events_topic: str, nautobot_topic: str) -> str:
    """Where a letter is replayed: back to the source's events topic.

    A target's letters are Nautobot's change events: they go back to Nautobot's events topic.
    """
    if stored.letter is not None and stored.letter.original_topic == nautobot_topic:
        return nautobot_topic
    return events_topic


async def replay(
    bootstrap: KafkaConnection | str,
    topic: str,
    group: str,
    target: str | Callable[[StoredLetter], str],
    letters: list[StoredLetter],
) -> int:
    """Produce `letters` (original key and bytes) to `target` (one topic, or one per letter); remember they went."""
    by_topic: dict[str, list[StoredLetter]] = {}
    for stored in letters:
        by_topic.setdefault(target if isinstance(target, str) else target(stored), []).append(stored)
    count = 0
    for name, batch in by_topic.items():
        count += await produce_raw(bootstrap, name, ((s.key, s.value) for s in batch))
    positions: dict[TopicPartition, int] = {}
    for stored in letters:
        tp = TopicPartition(topic, stored.partition)
        positions[tp] = max(positions.get(tp, 0), stored.offset + 1)
    if positions:
        # Produced first, committed second: a crash in between replays those letters again, which the
        # idempotent apply absorbs.
        async with consumer(bootstrap, replay_group(group)) as committer:
            committer.assign(list(positions))
            await committer.commit(positions)
    return count
