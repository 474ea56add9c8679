"""Positions the database vouches for: per consumer group, agent and partition, the next offset to apply.

    admit    in the batch's transaction, before its work: lock the batch's partitions' rows
             (NOWAIT: a row held by another worker's batch is a transient fault) and sort the records:
               below the position                  already applied: skipped
               from the position on                to settle
               beginning past the position, with   a gap (something acknowledged was never
               records in the log in between       applied): refused, to be read again
    advance  in the same transaction, after the batch's work: next offset = last settled + 1

Because the position commits with the data it describes, a crash anywhere leaves both or neither,
and a worker that lost its partitions (a rebalance, a long pause) finds the rows moved on by its
successor and settles nothing twice or out of order. Everything here runs on a database thread,
inside the caller's transaction.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from django.db.models import Q

from streamsync.contract.records import Origin
from streamsync.models.bookkeeping import Position

# (topic, partition)
Partition = tuple[str, int]
# The offset of the first record at or after an offset, read from the log itself (a hole in the
# offsets may hold no records: transaction markers, compaction).
FirstOffset = Callable[[str, int, int], int]


def sync_agent(source: str) -> str:
    """The agent that applies `source`'s events to Nautobot: its positions are stored under this name."""
    return f"streamsync.sync.{source}"


def target_agent(target: str) -> str:
    """The agent that writes Nautobot's change events to `target`."""
    return f"streamsync.target.{target}"


@dataclass
class Admission:
    """What one batch may settle of each partition it holds records of, decided under the rows' locks."""

    fresh: list[Origin] = field(default_factory=list)  # to settle, in the batch's order
    skipped: list[Origin] = field(default_factory=list)  # below the position: already applied
    refused: dict[Partition, int] = field(default_factory=dict)  # a gap: read again from this offset
    ends: dict[Partition, int] = field(default_factory=dict)  # next offset once the fresh records are settled
    _rows: dict[Partition, int] = field(default_factory=dict)  # primary keys of the locked rows


def _of(partitions: Collection[Partition]) -> Q:
    return functools.reduce(operator.or_, (Q(topic=t, partition=p) for t, p in partitions))


def admit(group: str, agent: str, records: Sequence[Origin], first_offset: FirstOffset) -> Admission:
    """Lock the rows of the partitions `records` come from and decide what of them this batch settles.

    A partition this agent has never settled begins where its records begin. `first_offset` is
    asked only when the records begin past the stored position.
    """
    admission = Admission()
    by_partition: dict[Partition, list[Origin]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record)
    if not by_partition:
        return admission
    rows = _locked(group, agent, by_partition)
    missing = [p for p in by_partition if p not in rows]
    if missing:
        starts = {p: min(r.offset for r in by_partition[p]) for p in missing}
        Position.objects.bulk_create(
            [Position(group=group, agent=agent, topic=t, partition=p, next_offset=starts[(t, p)]) for t, p in missing],
            ignore_conflicts=True,  # another worker created it meanwhile: its row, locked below, decides
        )
        rows.update(_locked(group, agent, missing))
    admitted: set[Partition] = set()
    for partition, (pk, position) in rows.items():
        admission._rows[partition] = pk
        pending = [r for r in by_partition[partition] if r.offset >= position]
        admission.skipped += [r for r in by_partition[partition] if r.offset < position]
        if not pending:
            continue
        if pending[0].offset > position and first_offset(*partition, position) < pending[0].offset:
            admission.refused[partition] = position
            continue
        admitted.add(partition)
        admission.ends[partition] = pending[-1].offset + 1
    admission.fresh = [
        r for r in records if (r.topic, r.partition) in admitted and r.offset >= rows[(r.topic, r.partition)][1]
    ]
    return admission


def _locked(group: str, agent: str, partitions: Collection[Partition]) -> dict[Partition, tuple[int, int]]:
    """(primary key, next offset) of the existing rows for `partitions`, locked for this transaction."""
    found = (
        Position.objects.select_for_update(nowait=True)
        .filter(_of(partitions), group=group, agent=agent)
        .values_list("topic", "partition", "pk", "next_offset")
    )
    return {(topic, partition): (pk, offset) for topic, partition, pk, offset in found}


def advance(admission: Admission) -> None:
    """Move the admitted partitions' positions past the records this batch settled."""
    for partition, end in admission.ends.items():
        Position.objects.filter(pk=admission._rows[partition]).update(next_offset=end)


def stored(group: str, agents: Collection[str], partitions: Collection[Partition]) -> dict[tuple[str, Partition], int]:
    """The positions of `agents` on `partitions`, by (agent, partition); partitions never settled are absent."""
    if not partitions or not agents:
        return {}
    rows = Position.objects.filter(_of(partitions), group=group, agent__in=list(agents)).values_list(
        "agent", "topic", "partition", "next_offset"
    )
    return {(agent, (topic, partition)): offset for agent, topic, partition, offset in rows}


def move(group: str, agent: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Set `agent`'s positions on `topic`'s partitions (`streamsync replay`): the next worker reads from there."""
    from django.db import transaction

    with transaction.atomic():
        for partition, offset in offsets.items():
            Position.objects.update_or_create(
                group=group, agent=agent, topic=topic, partition=partition, defaults={"next_offset": offset}
            )
