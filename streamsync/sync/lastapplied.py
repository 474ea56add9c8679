"""Where the latest applied event of each key is: what tells a dead letter that newer news came since.

A dead letter is an old event. Once a newer event for its key has been applied (to Nautobot by a
source's agent, to the remote system by a target's), replaying the letter would put it at the end
of the log, after the newer one, and roll the object back: it is *superseded*. To know that,
every batch records, per agent, topic and canonical key, the partition and offset of the latest
event it applied (`remember`: one INSERT ... ON CONFLICT for the whole batch, in the batch's own
transaction), and `dlq list|replay` look the letters up (`newer`).

A letter is superseded when its key's latest applied event is on the letter's original partition
at a greater offset. Everything here runs inside the caller's transaction, on a database thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamsync.contract.records import Origin

if TYPE_CHECKING:  # types only: `dlq` and the health page import this module and need nothing else of sync/
    from streamsync.contract.envelope import Event
    from streamsync.sync.batch import BatchResult

# What counts as applied: the object is as the event says (created, changed, deleted, or found so).
# `Outcome` values; every outcome but failed.
APPLIED = frozenset({"created", "updated", "deleted", "unchanged"})


@dataclass(frozen=True)
class Place:
    """Where a record is in the log."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Lookup:
    """A dead letter as `newer` asks about it: its key, and where its original record was."""

    agent: str
    key: str
    place: Place


def applied_events(result: BatchResult) -> list[Event]:
    """The events of `result`'s objects that were applied (every outcome but failed)."""
    return [event for obj in result.objects if obj.outcome in APPLIED for event in obj.events]


def remember(agent: str, applied: Iterable[tuple[Origin, str]]) -> int:
    """Record the latest of the `applied` records (origin, canonical key, in log order) per key; rows written.

    One statement for the whole batch. A key longer than the table takes is left out: its letters
    are then never superseded (no real object has such a key).
    """
    from streamsync.models.bookkeeping import KEY_LENGTH, LastApplied

    latest: dict[tuple[str, str], Origin] = {}
    for origin, key in applied:
        if len(key.encode()) <= KEY_LENGTH:
            latest[(origin.topic, key)] = origin  # later in the batch is later in the log
    if not latest:
        return 0
    LastApplied.objects.bulk_create(
        [
            LastApplied(agent=agent, topic=topic, key=key, partition=origin.partition, offset=origin.offset)
            for (topic, key), origin in latest.items()
        ],
        update_conflicts=True,
        unique_fields=["agent", "topic", "key"],
        update_fields=["partition", "offset"],
    )
    return len(latest)


def newer(lookups: Sequence[Lookup]) -> dict[Lookup, Place]:
    """For each lookup whose key has a later applied event on the same partition: where that event is."""
    from streamsync.models.bookkeeping import LastApplied

    by_stream: dict[tuple[str, str], set[str]] = {}
    for lookup in lookups:
        by_stream.setdefault((lookup.agent, lookup.place.topic), set()).add(lookup.key)
    latest: dict[tuple[str, str, str], tuple[int, int]] = {}
    for (agent, topic), keys in by_stream.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), 1000):  # one index scan per thousand keys
            rows = LastApplied.objects.filter(agent=agent, topic=topic, key__in=ordered[start : start + 1000])
            for key, partition, offset in rows.values_list("key", "partition", "offset"):
                latest[(agent, topic, key)] = (partition, offset)
    found: dict[Lookup, Place] = {}
    for lookup in lookups:
        at = latest.get((lookup.agent, lookup.place.topic, lookup.key))
        if at is not None and at[0] == lookup.place.partition and at[1] > lookup.place.offset:
            found[lookup] = Place(lookup.place.topic, *at)
    return found
