"""Consumer lag: how far each streamsync consumer group is behind, per partition, and for how long.

Lag is the log-end offset minus the group's committed offset. A partition the group has not
committed on yet counts from the log's start, since workers begin at the earliest offset.

The age of the oldest unprocessed event is read from Kafka itself: the timestamp of the first
record at or after the committed offset (the log's start where nothing is committed). It is the
record's Kafka timestamp, which is the producer's send time (CreateTime, the default) or the
broker's append time on topics set to `message.timestamp.type=LogAppendTime`; not the envelope's
`ts`, which is when the change happened at the source and may be much older.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiokafka import TopicPartition

from streamsync.kafka.admin import partitions
from streamsync.kafka.clients import admin_client, consumer
from streamsync.kafka.connection import KafkaConnection
from streamsync.kafka.reading import read_window
from streamsync.ops import columns

# How long `consumer_lag` waits for the records whose timestamps give the ages.
AGE_READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class PartitionLag:
    """One row of `streamsync lag`, in `kafka-consumer-groups --describe` terms, plus the oldest event's age."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int
    lag: int
    # Kafka timestamp (ms since the epoch) of the oldest unprocessed record, and its age when measured:
    # None when nothing waits, or when the record could not be read in time.
    oldest_timestamp_ms: int | None = None
    oldest_age_seconds: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)

    @property
    def next_offset(self) -> int:
        """The offset of the oldest unprocessed record (the log's start counts where nothing is committed)."""
        return self.log_end_offset - self.lag


async def consumer_lag(
    bootstrap: KafkaConnection | str,
    prefix: str,
    groups: Iterable[str] | None = None,
    *,
    topics: Iterable[str] = (),
    ages: bool = True,
) -> list[PartitionLag]:
    """Lag of every consumer group (or those named) on topics under `prefix`.

    `topics` adds topics the groups have never committed on (a worker's own, before its first
    commit): their partitions count from the log's start.
    """
    extra = set(topics)
    async with admin_client(bootstrap) as admin, consumer(bootstrap) as offsets:
        names = sorted(groups) if groups else sorted(g[0] for g in await admin.list_consumer_groups())
        rows: list[PartitionLag] = []
        for group in names:
            committed = {
                tp: meta.offset
                for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
                if tp.topic.startswith(prefix + ".")
            }
            # Every partition of the group's topics, including those it has not committed on yet.
            tps = await partitions(admin, {tp.topic for tp in committed} | extra)
            if not tps:
                continue
            ends = await offsets.end_offsets(tps)
            starts = await offsets.beginning_offsets(tps)
            for tp in tps:
                current = committed.get(tp)
                end = ends[tp]
                rows.append(PartitionLag(group, tp.topic, tp.partition, current, end, end - (current or starts[tp])))
        if ages:
            rows = await _with_ages(offsets, rows)
        return rows


async def _with_ages(reader: Any, rows: list[PartitionLag]) -> list[PartitionLag]:
    """Rows with the timestamp and age of their oldest unprocessed record, where there is one."""
    wanted = {(TopicPartition(r.topic, r.partition), r.next_offset) for r in rows if r.lag > 0}
    stamps: dict[tuple[TopicPartition, int], int] = {}
    # One offset per partition at a time (several groups may wait at different offsets of one partition).
    while wanted:
        round_: dict[TopicPartition, int] = {}
        for tp, offset in sorted(wanted, key=lambda w: (w[0].topic, w[0].partition, w[1])):
            round_.setdefault(tp, offset)
        stamps.update({(tp, round_[tp]): ts for tp, ts in (await first_timestamps(reader, round_)).items()})
        wanted -= {(tp, offset) for tp, offset in round_.items()}
    now_ms = time.time() * 1000
    return [
        replace(r, oldest_timestamp_ms=ts, oldest_age_seconds=round(max(0.0, now_ms - ts) / 1000, 3))
        if (ts := stamps.get((TopicPartition(r.topic, r.partition), r.next_offset))) is not None
        else r
        for r in rows
    ]


async def first_timestamps(
    reader: Any, positions: dict[TopicPartition, int], timeout: float = AGE_READ_TIMEOUT
) -> dict[TopicPartition, int]:
    """Kafka timestamp (ms) of the first record at or after each position; partitions not read in time are left out.

    `reader` is a started consumer outside any group: its assignment is replaced.
    """
    if not positions:
        return {}
    found: dict[TopicPartition, int] = {}
    ends = await reader.end_offsets(list(positions))
    window = {tp: (offset, ends[tp]) for tp, offset in positions.items()}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async for tp, record in read_window(reader, window):
                found.setdefault(tp, record.timestamp)
                if len(found) == len(window):
                    break
    reader.assign([])
    return found


def format_age(seconds: float | None) -> str:
    """Short human form of an age: 0.8s, 42s, 3m07s, 2h05m, 3d04h; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // sub_size:02d}{sub}"
    return f"{whole}s"


def format_table(rows: Iterable[PartitionLag]) -> str:
    """Aligned text table like `kafka-consumer-groups --describe`, with the oldest unprocessed event's age."""
    header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "OLDEST-AGE")
    body = [
        (
            r.group,
            r.topic,
            str(r.partition),
            "-" if r.current_offset is None else str(r.current_offset),
            str(r.log_end_offset),
            str(r.lag),
            format_age(r.oldest_age_seconds if r.lag > 0 else None),
        )
        for r in rows
    ]
    return columns.format_table(header, body)
