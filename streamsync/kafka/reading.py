"""Reading stretches of a topic with a consumer outside any group: the one read-to-end loop.

Resync and snapshot read the state topic to its end, `dlq list` the dead letters, the health page
the newest letters, lag the record at each committed offset: all the same loop over
[first, end) offsets per partition, taken here once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition

# (first offset, end offset): the records of a partition to read, end excluded.
Window = Mapping[TopicPartition, tuple[int, int]]


async def to_end(
    reader: Any, tps: Iterable[TopicPartition], since: Mapping[int, int] | None = None
) -> dict[TopicPartition, tuple[int, int]]:
    """Each partition's window from its start (or from `since[partition]`, never before the start) to its end now."""
    tps = list(tps)
    starts = await reader.beginning_offsets(tps)
    ends = await reader.end_offsets(tps)
    return {tp: (max(starts[tp], (since or {}).get(tp.partition, starts[tp])), ends[tp]) for tp in tps}


async def read_window(reader: Any, window: Window) -> AsyncIterator[tuple[TopicPartition, Any]]:
    """Every record of each partition's window, in offset order per partition.

    `reader` is a started consumer outside any group: its assignment is replaced. A caller may stop
    early (break); records past a window's end are never yielded.
    """
    reader.assign(list(window))
    for tp, (first, _end) in window.items():
        reader.seek(tp, first)
    open_ = {tp for tp, (first, end) in window.items() if first < end}
    while open_:
        for tp, batch in (await reader.getmany(*open_, timeout_ms=1000)).items():
            first, end = window[tp]
            for record in batch:
                if first <= record.offset < end:
                    yield tp, record
        open_ = {tp for tp in open_ if await reader.position(tp) < window[tp][1]}
