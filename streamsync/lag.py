"""Consumer lag: how far each streamsync consumer group is behind, per partition.

Lag is the log-end offset minus the group's committed offset. A partition the group has not
committed on yet counts from the log's start, since workers begin at the earliest offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from streamsync.kafka import KafkaConnection, admin_client, consumer, partitions


@dataclass(frozen=True)
class PartitionLag:
    """One row of `streamsync lag`, in `kafka-consumer-groups --describe` terms."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int
    lag: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


async def consumer_lag(
    bootstrap: KafkaConnection | str, prefix: str, groups: Iterable[str] | None = None
) -> list[PartitionLag]:
    """Lag of every consumer group (or those named) on topics under `prefix`."""
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
            tps = await partitions(admin, {tp.topic for tp in committed})
            if not tps:
                continue
            ends = await offsets.end_offsets(tps)
            starts = await offsets.beginning_offsets(tps)
            for tp in tps:
                current = committed.get(tp)
                end = ends[tp]
                rows.append(PartitionLag(group, tp.topic, tp.partition, current, end, end - (current or starts[tp])))
        return rows


def format_table(rows: Iterable[PartitionLag]) -> str:
    """Aligned text table like `kafka-consumer-groups --describe`."""
    header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG")
    body = [
        (
            r.group,
            r.topic,
            str(r.partition),
            "-" if r.current_offset is None else str(r.current_offset),
            str(r.log_end_offset),
            str(r.lag),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]
    )
