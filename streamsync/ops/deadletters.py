"""Reading and re-driving dead letters (`streamsync dlq list|replay`).

`replay` remembers how far it got in a consumer group of its own (`<group>-dlq-replay`), so a
letter is re-driven once; a replayed event that fails again comes back as a new dead letter.
A letter whose key has had a newer event applied since is *superseded* (`mark_superseded`,
streamsync/sync/lastapplied.py): replaying it would roll the object back, so `dlq replay` passes it
over unless told otherwise. A target's letters go back to Nautobot's events topic marked for
that target alone (`redrive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from aiokafka import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from streamsync.contract.deadletter import HEADER_REDRIVE_FOR, DeadLetter
from streamsync.contract.envelope import EnvelopeError, decode
from streamsync.contract.records import Headers, OutRecord
from streamsync.kafka.admin import partitions
from streamsync.kafka.clients import admin_client, consumer, produce_records
from streamsync.kafka.connection import KafkaConnection
from streamsync.kafka.reading import read_window, to_end
from streamsync.sync.lastapplied import Lookup, Place, newer


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as it sits on the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    letter: DeadLetter | None  # None: headers missing or unreadable
    replayed: bool  # `dlq replay` passed it: replayed, or passed over as superseded
    headers: Headers = ()
    # Where the newer event applied for its key since is (`mark_superseded`); None: not superseded.
    superseded_by: Place | None = None

    @property
    def object_key(self) -> str | None:
        """The canonical key of the letter's event, if the record holds one and is keyed by it; else None."""
        if self.key is None or self.value is None or self.letter is None or self.letter.truncated is not None:
            return None
        try:
            event = decode(self.value)
        except EnvelopeError:
            return None
        key = event.canonical_key
        return key if self.key == key.encode() else None


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
        done = {tp: (await reader.committed(tp)) or 0 for tp in tps}
        async for tp, record in read_window(reader, await to_end(reader, tps)):
            letters.append(_stored(tp, record, done[tp]))
    return sorted(letters, key=lambda s: (s.partition, s.offset))


def _stored(tp: TopicPartition, record: ConsumerRecord[bytes, bytes], replayed_below: int) -> StoredLetter:
    try:
        letter: DeadLetter | None = DeadLetter.from_headers(list(record.headers or []))
    except ValidationError:
        letter = None
    headers = tuple((name, bytes(value)) for name, value in record.headers or ())
    return StoredLetter(
        tp.partition, record.offset, record.key, record.value, letter, record.offset < replayed_below, headers
    )


def mark_superseded(letters: Sequence[StoredLetter], system: str, nautobot_topic: str) -> list[StoredLetter]:
    """`letters`, each superseded one with where the newer event applied for its key is (needs the database).

    A letter of `system` whose original record came from `nautobot_topic` is its target's, any
    other its source's. Letters whose key cannot be read (no event, keyed otherwise) are never
    superseded.
    """
    from streamsync.sync.positions import sync_agent, target_agent

    lookups: dict[tuple[int, int], Lookup] = {}
    for stored in letters:
        key, info = stored.object_key, stored.letter
        if key is None or info is None:
            continue
        agent = target_agent(system) if info.original_topic == nautobot_topic else sync_agent(system)
        place = Place(info.original_topic, info.original_partition, info.original_offset)
        lookups[(stored.partition, stored.offset)] = Lookup(agent, key, place)
    found = newer(list(lookups.values()))
    return [
        replace(s, superseded_by=found.get(lookups[(s.partition, s.offset)]))
        if (s.partition, s.offset) in lookups
        else s
        for s in letters
    ]


def destination(stored: StoredLetter, events_topic: str, nautobot_topic: str) -> str:
    """Where a letter is replayed: back to the source's events topic.

    A target's letters are Nautobot's change events: they go back to Nautobot's events topic.
    """
    if stored.letter is not None and stored.letter.original_topic == nautobot_topic:
        return nautobot_topic
    return events_topic


def redrive(stored: StoredLetter, system: str, events_topic: str, nautobot_topic: str) -> OutRecord:
    """The record that re-drives a letter of `system`: its original key, bytes and headers, to `destination`.

    A target's letter goes to Nautobot's events topic, which every target reads: it carries
    `streamsync-redrive-for: <system>`, so that only that target applies it.
    """
    topic = destination(stored, events_topic, nautobot_topic)
    headers = DeadLetter.original_headers(stored.headers)
    if topic == nautobot_topic:
        headers += ((HEADER_REDRIVE_FOR, system.encode()),)
    return OutRecord(topic, stored.key, stored.value, headers)


async def replay(
    bootstrap: KafkaConnection | str,
    topic: str,
    group: str,
    records: Sequence[OutRecord],
    handled: Sequence[StoredLetter],
) -> int:
    """Produce `records` (re-driven letters), then remember every `handled` letter of `topic` as done.

    `handled` holds the letters replayed and those passed over (superseded): `dlq replay` goes
    past both. Returns how many records were produced.
    """
    count = await produce_records(bootstrap, records)
    positions: dict[TopicPartition, int] = {}
    for stored in handled:
        tp = TopicPartition(topic, stored.partition)
        positions[tp] = max(positions.get(tp, 0), stored.offset + 1)
    if positions:
        # Produced first, committed second: a crash in between replays those letters again, which the
        # idempotent apply absorbs.
        async with consumer(bootstrap, replay_group(group)) as committer:
            committer.assign(list(positions))
            await committer.commit(positions)
    return count
