"""Reading a source's state topic back: per key its latest record, and where the read ended (resync, snapshot).

The topic's record format and how workers keep it are streamsync/sync/state.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from streamsync.kafka.admin import partitions
from streamsync.kafka.clients import admin_client, consumer
from streamsync.kafka.connection import KafkaConnection
from streamsync.kafka.reading import read_window, to_end


@dataclass
class StateRead:
    """What `read_state` found: per key its latest value (None: a tombstone) and where the read ended."""

    values: dict[str, bytes | None] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    records: int = 0
    exists: bool = True
    # Where it was read from, so that whoever holds it can read on from `ends`.
    kafka: KafkaConnection | str | None = None
    topic: str = ""

    def live(self) -> dict[str, bytes]:
        """Keys whose latest record is not a tombstone."""
        return {key: value for key, value in self.values.items() if value is not None}


Progress = Callable[[int, int], None]


async def read_state(
    kafka: KafkaConnection | str,
    topic: str,
    since: Mapping[int, int] | None = None,
    progress: Progress | None = None,
) -> StateRead:
    """Read `topic` (from its start, or from `since` per partition) to the end it had when the read began.

    Only the latest value per key is kept, as bytes: decoding is left to whoever uses a value, so
    the state is never held twice. `progress(done, total)` is called as records arrive.
    """
    async with admin_client(kafka) as admin:
        tps = await partitions(admin, [topic])
    if not tps:
        return StateRead(exists=False, kafka=kafka, topic=topic)
    result = StateRead(kafka=kafka, topic=topic)
    async with consumer(kafka) as reader:
        window = await to_end(reader, tps, since)
        result.ends = {tp.partition: end for tp, (_first, end) in window.items()}
        total = sum(max(0, end - first) for first, end in window.values())
        async for _tp, record in read_window(reader, window):
            if record.key is not None:
                result.values[record.key.decode()] = record.value
                result.records += 1
            if progress is not None and result.records % 1000 == 0:
                progress(result.records, total)
    if progress is not None:
        progress(result.records, total)
    return result
